#!/usr/bin/env python3
"""MOCK of the `nix` command, for the tests of how `cargo xtask generate` drives Nix.

Nix cannot evaluate or build anything on the machines these tests run on (no binary cache, no
source fetching), so this stands in for it. It records every command line it gets, answers
`nix --version`, `nix eval` and `nix build` the way Nix does for this repository's flake, and
fails like Nix when told to. It evaluates nothing: the images it reports come from a JSON file.

Environment:
  MOCK_NIX_LOG      file to append each command line to, as a JSON array per line
  MOCK_NIX_IMAGES   JSON file: {"<attribute>": {"name": ..., "tag": ..., "env": [...]}}
  MOCK_NIX_VERSION  what `nix --version` prints (default "nix (Nix) 2.24.10")
  MOCK_NIX_FAIL     "eval" or "build": that command fails as Nix would
"""
import json
import os
import sys

FEATURES = ["--extra-experimental-features", "nix-command flakes"]

args = sys.argv[1:]
if os.environ.get("MOCK_NIX_LOG"):
    with open(os.environ["MOCK_NIX_LOG"], "a") as log:
        log.write(json.dumps(args) + "\n")

if args == ["--version"]:
    print(os.environ.get("MOCK_NIX_VERSION", "nix (Nix) 2.24.10"))
    sys.exit(0)

if args[:2] != FEATURES:
    sys.exit("mock nix: expected the experimental features first, got %r" % args)
command, rest = args[2], args[3:]
fail = os.environ.get("MOCK_NIX_FAIL")

if command == "eval":
    installable = rest[1]
    flake, attribute = installable.split("#", 1)
    print("warning: Git tree '%s' is dirty" % flake, file=sys.stderr)
    if fail == "eval":
        print("error: flake 'git+file://%s' does not provide attribute 'packages.x86_64-linux.%s'"
              % (flake, attribute), file=sys.stderr)
        sys.exit(1)
    with open(os.environ["MOCK_NIX_IMAGES"]) as images:
        image = json.load(images)[attribute]
    image = dict(image, drv="/nix/store/%s-image-%s.json.drv" % (image["tag"], attribute))
    print(json.dumps(image, sort_keys=True))
elif command == "build":
    out_link, installable = rest[1], rest[2]
    drv = installable.rsplit("^", 1)[0]
    print("building '%s'..." % drv, file=sys.stderr)
    if fail == "build":
        print("error: builder for '%s' failed with exit code 2" % drv, file=sys.stderr)
        sys.exit(1)
    target = out_link + ".mock-image.json"
    with open(target, "w") as built:
        built.write("{}\n")
    if os.path.lexists(out_link):
        os.remove(out_link)
    os.symlink(target, out_link)
else:
    sys.exit("mock nix: unexpected command %r" % args)
