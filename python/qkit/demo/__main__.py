"""``python3 -m qkit.demo --out DIR``: see qkit.demo.run.main."""
from .run import main

if __name__ == "__main__":
    raise SystemExit(main())
