#!/usr/bin/env python3
"""The SBOM of a binary built with `cargo auditable`: reads the dependency
list the build embedded in it (ELF section `.dep-v0`, zlib-compressed JSON:
every crate linked into it, with its version, source, kind and
dependencies) and writes it as CycloneDX 1.5 JSON, each crates.io package
with its purl and the SHA-256 that Cargo.lock records for it.

So the SBOM is what the binary says it contains, not what a manifest
would resolve to: the image's binary (Dockerfile) carries the same list,
and `cargo audit bin` or `syft` read it from the image.

    sbom.py BINARY CARGO_LOCK OUT.json

Fails when the binary has no dependency list (it was not built with
`cargo auditable`).
"""
import argparse
import datetime
import json
import pathlib
import struct
import sys
import tomllib
import uuid
import zlib


def elf_section(data: bytes, wanted: str) -> bytes | None:
    """The contents of section `wanted` of a 64-bit little-endian ELF file."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise SystemExit("not a 64-bit little-endian ELF binary")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def header(i):
        # name, type, flags, addr, offset, size
        return struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)

    names_offset, names_size = header(shstrndx)[4:6]
    names = data[names_offset:names_offset + names_size]
    for i in range(shnum):
        name_at, _, _, _, offset, size = header(i)
        name = names[name_at:names.index(b"\0", name_at)].decode()
        if name == wanted:
            return data[offset:offset + size]
    return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary", type=pathlib.Path)
    parser.add_argument("lock", type=pathlib.Path)
    parser.add_argument("out", type=pathlib.Path)
    args = parser.parse_args()

    section = elf_section(args.binary.read_bytes(), ".dep-v0")
    if section is None:
        raise SystemExit(f"{args.binary} has no .dep-v0 section: build it with `cargo auditable build`")
    packages = json.loads(zlib.decompress(section))["packages"]
    lock = tomllib.loads(args.lock.read_text())
    checksums = {(p["name"], p["version"]): p.get("checksum") for p in lock["package"]}

    def ref(p):
        return f"pkg:cargo/{p['name']}@{p['version']}"

    root = next(p for p in packages if p.get("root"))
    components = []
    for p in packages:
        if p is root:
            continue
        component = {
            "type": "library",
            "bom-ref": ref(p),
            "name": p["name"],
            "version": p["version"],
            # Build dependencies (build scripts, proc macros) ran at build
            # time; they are not in the binary.
            "scope": "excluded" if p.get("kind") == "build" else "required",
        }
        if p.get("source") == "crates.io":
            component["purl"] = ref(p)
            checksum = checksums.get((p["name"], p["version"]))
            if checksum:
                component["hashes"] = [{"alg": "SHA-256", "content": checksum}]
        components.append(component)
    dependencies = [
        {"ref": ref(p), "dependsOn": sorted({ref(packages[i]) for i in p.get("dependencies", [])})}
        for p in packages
    ]
    bom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.uuid4()}",
        "version": 1,
        "metadata": {
            "timestamp": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": {"components": [{"type": "application", "name": ".ci/sbom.py (from cargo auditable's .dep-v0)"}]},
            "component": {"type": "application", "bom-ref": ref(root), "name": root["name"], "version": root["version"]},
        },
        "components": sorted(components, key=lambda c: c["bom-ref"]),
        "dependencies": sorted(dependencies, key=lambda d: d["ref"]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(bom, indent=1) + "\n")

    runtime = sum(1 for c in components if c["scope"] == "required")
    hashed = sum(1 for c in components if "hashes" in c)
    print(f"summary: {args.out}: {len(components)} packages ({runtime} in the binary, "
          f"{len(components) - runtime} build-time only), {hashed} with Cargo.lock's SHA-256")


if __name__ == "__main__":
    sys.exit(main())
