"""The lab's bookkeeping: what `up` made, kept in `<lab dir>/lab.json`.

Every step that creates something writes the record first, so `down` finds all of it
after a crash of the lab command too. The record is mutable on purpose: it is the lab's
ledger, changed by each fault and saved (atomically) after each change.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bmx7_wg_lab.errors import LabError

FORMAT = 1


@dataclass
class ProcessRecord:
    node: int
    role: str  # "bmx7" | "bmx7-wg"
    pid: int
    start: int  # field 22 of /proc/PID/stat: tells our process from a later one with the same PID


@dataclass
class LabRecord:
    name: str
    directory: str
    created: float
    topology: str  # the --topology value that builds it again (random with its seed)
    nodes: list[int]
    links: list[tuple[int, int]]
    namespaces: dict[int, str]  # node -> network namespace, written before the namespace exists
    interfaces: dict[int, str]  # node -> its WireGuard interface
    node_ids: dict[int, str] = field(default_factory=dict)
    cut: list[tuple[int, int]] = field(default_factory=list)  # links set down by `fault cut`
    distrust: list[tuple[int, int]] = field(default_factory=list)  # (a, b): a does not trust b
    processes: list[ProcessRecord] = field(default_factory=list)
    netem: dict[str, float] = field(default_factory=dict)  # delay_ms, jitter_ms, loss_pct
    backend: str = "auto"
    bmx7: str = ""
    bmx7_lib: str = ""
    trust_set: bool = False  # bmx7 runs with trustedNodesDir (once the node ids are known)

    @property
    def path(self) -> Path:
        return Path(self.directory) / "lab.json"

    def node_dir(self, node: int) -> Path:
        return Path(self.directory) / f"n{node}"

    def process(self, node: int, role: str) -> ProcessRecord | None:
        for p in self.processes:
            if p.node == node and p.role == role:
                return p
        return None

    def save(self) -> None:
        data: dict[str, Any] = {"format": FORMAT, **asdict(self)}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)

    @classmethod
    def load(cls, path: Path) -> LabRecord:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.pop("format", None) != FORMAT:
                raise ValueError("unknown format")
            data["links"] = [tuple(x) for x in data["links"]]
            data["cut"] = [tuple(x) for x in data["cut"]]
            data["distrust"] = [tuple(x) for x in data["distrust"]]
            for key in ("namespaces", "interfaces", "node_ids"):
                data[key] = {int(k): v for k, v in data[key].items()}
            data["processes"] = [ProcessRecord(**p) for p in data["processes"]]
            return cls(**data)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LabError(f"{path}: not a lab record this bmx7-wg-lab can read ({exc})") from exc
