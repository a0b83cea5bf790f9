# createWorker: a toolchain image → a NativeLink worker image for it.
#
# The worker image is the toolchain image plus one customisation: the nativelink binary (with
# bash and coreutils) in /bin, a non-root user `nativelink` (uid/gid 1000) with its home, a
# world-writable /tmp (1777) and /usr/bin/env for `#!/usr/bin/env` shebangs. Its tag is the
# toolchain image's tag, so the worker for a toolchain is found from the toolchain's facts alone
# (generated/kubernetes names `nativelink-worker-<toolchain>:<tag>`), and a new NativeLink
# does not invalidate the toolchain's cache entries.
{
  pkgs,
  buildImage,
  nativelink, # the package providing bin/nativelink
  revision, # the revision of this repository, for the OCI label
}:
let
  uid = 1000;
  gid = 1000;
  user = "nativelink";
  home = "/home/${user}";

  programs = pkgs.buildEnv {
    name = "nativelink-worker-programs";
    paths = [ nativelink pkgs.bashInteractive pkgs.coreutils ];
    pathsToLink = [ "/bin" ];
  };

  rootfs = pkgs.runCommand "nativelink-worker-rootfs" { } ''
    mkdir -p $out/etc $out${home} $out/tmp $out/usr/bin
    cat > $out/etc/passwd <<PASSWD
    root:x:0:0:root:/root:/bin/bash
    ${user}:x:${toString uid}:${toString gid}::${home}:/bin/bash
    PASSWD
    cat > $out/etc/group <<GROUP
    root:x:0:
    ${user}:x:${toString gid}:
    GROUP
    ln -s ${pkgs.coreutils}/bin/env $out/usr/bin/env
  '';

in
image:
let
  # The toolchain's variables as a set, and PATH with /bin first so `nativelink` is found.
  baseEnv = builtins.listToAttrs (map
    (entry:
      let parts = builtins.match "([^=]+)=(.*)" entry;
      in { name = builtins.elemAt parts 0; value = builtins.elemAt parts 1; })
    image.meta.Env);
  workerEnv = baseEnv // {
    PATH = "/bin" + pkgs.lib.optionalString (baseEnv ? PATH) ":${baseEnv.PATH}";
  };
  workerEnvList = pkgs.lib.mapAttrsToList (name: value: "${name}=${value}") workerEnv;
in
buildImage {
  name = "nativelink-worker-${image.imageName}";
  tag = image.imageTag;
  fromImage = image;
  maxLayers = 20;
  copyToRoot = [ rootfs programs ];
  perms = [
    { path = rootfs; regex = "/tmp$"; mode = "1777"; uid = 0; gid = 0; }
    { path = rootfs; regex = "${home}$"; mode = "0755"; inherit uid gid; uname = user; gname = user; }
  ];
  config = {
    User = "${toString uid}:${toString gid}";
    WorkingDir = home;
    Entrypoint = [ "/bin/nativelink" ];
    Env = workerEnvList;
    Labels = {
      "org.opencontainers.image.title" = "nativelink-worker-${image.imageName}";
      "org.opencontainers.image.description" =
        "NativeLink worker for the ${image.imageName} toolchain image (${image.imageName}:${image.imageTag})";
      "org.opencontainers.image.base.name" = "${image.imageName}:${image.imageTag}";
      "org.opencontainers.image.revision" = revision;
    };
  };
  meta = { Env = workerEnvList; };
}
