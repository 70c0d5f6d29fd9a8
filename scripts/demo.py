"""The README's demonstration: `make demo` runs this.

Runs the kernel demonstration (a 100,000-entry state tree on LevelDB with a
proof of a present and an absent key).
"""

import pathlib
import runpy
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

if __name__ == "__main__":
    runpy.run_path(str(HERE / "demo_kernel.py"), run_name="__main__")
