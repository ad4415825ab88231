import sys

from badblock.cli import main

sys.exit(main())
