"""``python -m tunnelauth``."""

from tunnelauth.entry import main

raise SystemExit(main())
