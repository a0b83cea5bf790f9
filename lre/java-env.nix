# The environment of the lre-java toolchain: a headless JDK 17, every path in the Nix store.
# A pure function of store paths, evaluated with plain strings by `cargo xtask test`.
{
  jdk, # jdk17_headless: the JDK lives in lib/openjdk
  coreutils,
  findutils,
  gnutar,
}:
[
  ("PATH=" + builtins.concatStringsSep ":" [
    "${jdk}/bin"
    "${coreutils}/bin"
    "${findutils}/bin"
    "${gnutar}/bin"
  ])
  "JAVA_HOME=${jdk}/lib/openjdk"
]
