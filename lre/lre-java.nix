# The lre-java toolchain image: a headless JDK 17. Like lre-cc, it is tagged by its derivation's
# hash and carries its environment in `meta.Env` for `cargo xtask generate`.
{ pkgs, buildImage }:
let
  Env = import ./java-env.nix {
    jdk = pkgs.jdk17_headless;
    inherit (pkgs) coreutils findutils gnutar;
  };
in
buildImage {
  name = "lre-java";
  maxLayers = 100;
  config = { inherit Env; };
  meta = { inherit Env; };
}
