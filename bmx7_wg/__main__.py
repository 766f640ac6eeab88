from bmx7_wg.cli import main

raise SystemExit(main())
