import sys

from bmx7_wg_lab.cli import main

sys.exit(main())
