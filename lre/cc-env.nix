# The environment of the lre-cc toolchain: clang with libc++ and libunwind, every path in the
# Nix store. A pure function of store paths, so `cargo xtask test` can evaluate it with plain
# strings (no nixpkgs needed) and check what `cargo xtask generate` will read from `meta.Env`.
#
# Bazel compiles `.cc` files with the C driver (`clang -c x.cc`), which nixpkgs' cc-wrapper does
# not treat as C++, so the libc++ headers and the C++ standard library are named explicitly here
# instead of relying on the wrapper's C++ mode.
{
  clang, # a cc-wrapper around clang (bin/clang)
  bintools, # the linker and binutils the wrapper uses
  libcxx, # libc++ (and libc++abi): lib/
  libcxxHeaders, # libc++'s headers: include/c++/v1
  libunwind,
  glibc,
  coreutils,
  findutils,
  gnutar,
}:
let
  joinedBy = separator: builtins.concatStringsSep separator;
in
[
  ("PATH=" + joinedBy ":" [
    "${clang}/bin"
    "${bintools}/bin"
    "${coreutils}/bin"
    "${findutils}/bin"
    "${gnutar}/bin"
  ])
  "CC=${clang}/bin/clang"
  ("BAZEL_CXXOPTS=" + joinedBy ":" [
    "-std=c++17"
    "-stdlib=libc++"
    "-isystem${libcxxHeaders}/include/c++/v1"
  ])
  ("BAZEL_LINKOPTS=" + joinedBy ":" [
    "-L${libcxx}/lib"
    "-L${libunwind}/lib"
    ("-Wl," + joinedBy "," [
      "-rpath,${libcxx}/lib"
      "-rpath,${libunwind}/lib"
      "-rpath,${glibc}/lib"
    ])
  ])
  "BAZEL_LINKLIBS=-lc++:-lm"
]
