"""Give an editable (``pip install -e .``) install what colcon installs under ``share/`` and ``lib/<package>/``.

An editable install puts nothing under ``share/``, so the real ``ros2 launch multidnn_sched ...`` and
``ros2 run multidnn_sched ...`` could not find the package in the standalone venv. This writes, under PREFIX
(the venv; ``make setup`` runs it):

* ``share/ament_index/resource_index/packages/multidnn_sched`` (the ament index marker);
* ``share/multidnn_sched/{package.xml,launch/*,config/**}`` as links into the checkout (edits show at once;
  a launch or config file added later needs another ``make setup``);
* ``lib/multidnn_sched/<console script>`` launchers for this interpreter, as colcon's ``setup.cfg`` places them.

    python scripts/ament_share.py PREFIX
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

PACKAGE = "multidnn_sched"
ROOT = Path(__file__).resolve().parents[1]
SHARED = ("package.xml", "launch", "config")


def _replace_link(link: Path, target: Path) -> None:
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.exists():
        raise FileExistsError(f"expected a link or nothing at {link}, found a directory (a non-editable install?)")
    link.symlink_to(target)


def install_ament_share(prefix: Path, root: Path = ROOT) -> list[Path]:
    """Write the marker, the share links and the executables under ``prefix``; returns what was written."""
    try:
        scripts = distribution(PACKAGE).entry_points.select(group="console_scripts")
    except PackageNotFoundError as error:
        raise SystemExit(f"expected {PACKAGE} installed (pip install -e .) for {sys.executable}, got none") from error
    written: list[Path] = []
    marker = prefix / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("")
    written.append(marker)
    share = prefix / "share" / PACKAGE
    share.mkdir(parents=True, exist_ok=True)
    for name in SHARED:  # files as links, folders as real folders of links (ros2 launch does not follow links)
        source = root / name
        files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
        for file in files:
            link = share / file.relative_to(root)
            if link.parent.is_symlink():
                link.parent.unlink()
            link.parent.mkdir(parents=True, exist_ok=True)
            _replace_link(link, file)
            written.append(link)
    lib = prefix / "lib" / PACKAGE
    lib.mkdir(parents=True, exist_ok=True)
    for script in scripts:
        path = lib / script.name
        if path.is_symlink():
            path.unlink()
        path.write_text(
            f"#!{sys.executable}\n# {PACKAGE} {script.name}: written by scripts/ament_share.py\n"
            f"import sys\nfrom {script.module} import {script.attr}\nsys.exit({script.attr}())\n"
        )
        path.chmod(0o755)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefix", type=Path, help="the venv (an AMENT_PREFIX_PATH entry)")
    args = parser.parse_args(argv)
    written = install_ament_share(args.prefix.resolve())
    print(f"ament share: {len(written)} entries under {args.prefix}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
