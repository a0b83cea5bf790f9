# The lre-cc toolchain image. It is never run as a toolchain container: its environment is what
# `cargo xtask generate` probes (read from `meta.Env` with `nix eval --json`), and
# lre/create-worker.nix turns it into the NativeLink worker that runs the remote actions.
# No tag is set, so nix2container tags it by its derivation's hash: any change to the toolchain
# is a new tag, and with it a new `container-image` platform property.
{ pkgs, buildImage }:
let
  llvm = pkgs.llvmPackages_19;
  clang = llvm.libcxxClang;
  Env = import ./cc-env.nix {
    inherit clang;
    inherit (clang) bintools;
    inherit (llvm) libcxx libunwind;
    libcxxHeaders = pkgs.lib.getDev llvm.libcxx;
    inherit (pkgs) glibc coreutils findutils gnutar;
  };
in
buildImage {
  name = "lre-cc";
  maxLayers = 100;
  config = { inherit Env; };
  meta = { inherit Env; };
}
