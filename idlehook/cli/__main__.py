import sys

from idlehook.cli import main

sys.exit(main())
