import sys

from homeagent.cli import main

sys.exit(main())
