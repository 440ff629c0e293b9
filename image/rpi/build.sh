# Raspberry Pi SD-card image (arm64): sourced by ../../build.sh (target `rpi`); needs ROOT, log, die and
# the AE_IMG_* variables defined there. Steps: wheels for aarch64 -> mmdebstrap rootfs (qemu-user)
# -> genimage -> .img.xz + .sha256.

: "${AE_IMG_RPI_NAME:=ammp-edge-rpi-$AE_IMG_TAG}"
: "${AE_IMG_RPI_HOSTNAME:=ammp-edge}"
: "${AE_IMG_RPI_FIRM_SIZE:=256M}"
: "${AE_IMG_RPI_ROOT_SIZE:=1536M}"
: "${AE_IMG_RPI_DATA_SIZE:=128M}"
: "${AE_IMG_RPI_XZ:=-T2 -3}"

rpi_binfmt() {
  [ "$(uname -m)" = aarch64 ] && return 0
  mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
  arch-test arm64 >/dev/null || die "cannot run arm64 binaries (qemu-user-static, binfmt-support, arch-test)"
}

rpi_wheels() {
  local dir="$AE_IMG_OUT/rpi/wheels"
  rm -rf "$dir"; mkdir -p "$dir"
  [ -r "$AE_IMG_CA_BUNDLE" ] && export PIP_CERT="$AE_IMG_CA_BUNDLE"
  "$AE_IMG_PYTHON" -m pip wheel -q --disable-pip-version-check --no-deps --wheel-dir "$dir" "$ROOT" >&2
  timeout "$AE_IMG_TIMEOUT" "$AE_IMG_PYTHON" -m pip download -q --disable-pip-version-check \
    --only-binary=:all: --platform manylinux2014_aarch64 --python-version 3.11 --implementation cp \
    --abi cp311 -d "$dir" "$dir"/ammp_edge-*.whl >&2
}

build_rpi() {
  local t0=$SECONDS out="$AE_IMG_OUT/rpi" pkgs
  for tool in mmdebstrap genimage mkdosfs mcopy mke2fs xz arch-test update-binfmts; do
    command -v "$tool" >/dev/null || die "$tool not found: apt-get install mmdebstrap qemu-user-static binfmt-support arch-test genimage dosfstools mtools e2fsprogs xz-utils"
  done
  rpi_binfmt
  rpi_wheels
  log "rpi: app bundle for image_update (self-update)"
  "$AE_IMG_PYTHON" -m ammp_edge update-bundle --wheels "$out/wheels" --drivers "$ROOT/drivers" --conf "$ROOT/conf" \
    --out "$out/ammp-edge-app-$AE_IMG_TAG-aarch64.tar" --version "$VERSION" >&2
  pkgs=$(grep -v '^#' "$ROOT/image/rpi/packages" | xargs | tr ' ' ',')
  rm -rf "$out/rootfs"
  log "rpi: arm64 root filesystem with mmdebstrap (about 6 minutes)"
  timeout "$AE_IMG_TIMEOUT" mmdebstrap --quiet --architectures=arm64 --variant=minbase \
    --components="main non-free-firmware" --include="$pkgs" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --essential-hook='chroot "$1" dpkg-divert --quiet --local --divert /usr/sbin/update-initramfs.real --rename --add /usr/sbin/update-initramfs; printf "#!/bin/sh\necho deferred \$*\n" > "$1/usr/sbin/update-initramfs"; chmod +x "$1/usr/sbin/update-initramfs"' \
    --essential-hook="mkdir -p \"\$1/etc/initramfs-tools/conf.d\" \"\$1/usr/share/initramfs-tools/modules.d\"; echo MODULES=list > \"\$1/etc/initramfs-tools/conf.d/zz-image.conf\"; grep -v '^#' '$ROOT/image/rpi/initramfs-modules' > \"\$1/usr/share/initramfs-tools/modules.d/zz-image\"" \
    --customize-hook="mkdir -p \"\$1/opt/ammp-edge\" \"\$1/tmp/wheels\"" \
    --customize-hook="copy-in '$ROOT/drivers' '$ROOT/conf' /opt/ammp-edge" \
    --customize-hook="sync-in '$out/wheels' /tmp/wheels" \
    --customize-hook="sync-in '$ROOT/image/rootfs' /" \
    --customize-hook="sync-in '$ROOT/image/rpi/rootfs' /" \
    --customize-hook='chroot "$1" python3 -m venv /opt/ammp-edge/venv && chroot "$1" /opt/ammp-edge/venv/bin/pip install -q --no-cache-dir --no-index --find-links /tmp/wheels ammp-edge && chroot "$1" /opt/ammp-edge/venv/bin/pip uninstall -y -q pip setuptools; rm -rf "$1/tmp/wheels"' \
    --customize-hook='sed -i -e "s/^#\?ROOTPART=.*/ROOTPART=LABEL=RASPIROOT/" -e "s/^#\?CONSOLES=.*/CONSOLES=\"ttyS1,115200 tty0\"/" "$1/etc/default/raspi-firmware"' \
    --customize-hook="echo '$AE_IMG_RPI_HOSTNAME' > \"\$1/etc/hostname\"; printf '127.0.1.1\t$AE_IMG_RPI_HOSTNAME\n' >> \"\$1/etc/hosts\"; mkdir -p \"\$1/data\"" \
    --customize-hook='ln -sf /run/ammp-edge-system/localtime "$1/etc/localtime"; rm -f "$1"/etc/ssh/ssh_host_*' \
    --customize-hook='chroot "$1" systemctl enable systemd-networkd ammp-edge.service ammp-edge-ssh-keys.service ammp-edge-settings.service ammp-edge-firstboot.service ammp-edge-wifi.service ammp-edge-wifi-ap.service' \
    --customize-hook='chroot "$1" systemctl disable mosquitto hostapd wpa_supplicant apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer 2>/dev/null; chroot "$1" systemctl mask hostapd' \
    --customize-hook='rm "$1/usr/sbin/update-initramfs"; chroot "$1" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs' \
    --customize-hook='chroot "$1" update-initramfs -c -k all' \
    --customize-hook='sed -i "s/ rw / ro /" "$1/boot/firmware/cmdline.txt"; grep -q " ro " "$1/boot/firmware/cmdline.txt"' \
    --customize-hook="cp '$ROOT/image/rpi/boot/ammp-edge.txt' \"\$1/boot/firmware/ammp-edge.txt\"" \
    bookworm "$out/rootfs" "$AE_IMG_MIRROR" >&2
  log "rpi: SD-card image with genimage"
  sed -e "s/@FIRM_SIZE@/$AE_IMG_RPI_FIRM_SIZE/" -e "s/@ROOT_SIZE@/$AE_IMG_RPI_ROOT_SIZE/" -e "s/@DATA_SIZE@/$AE_IMG_RPI_DATA_SIZE/" \
      -e "s/@IMAGE@/$AE_IMG_RPI_NAME.img/" "$ROOT/image/rpi/genimage.cfg.in" > "$out/genimage.cfg"
  rm -rf "$out/gi-tmp" "$out/gi-in" "$out/$AE_IMG_RPI_NAME.img"*; mkdir -p "$out/gi-in"
  timeout "$AE_IMG_TIMEOUT" genimage --config "$out/genimage.cfg" --rootpath "$out/rootfs" --tmppath "$out/gi-tmp" \
    --inputpath "$out/gi-in" --outputpath "$out" >&2
  log "rpi: xz $AE_IMG_RPI_XZ"
  # shellcheck disable=SC2086
  xz -k $AE_IMG_RPI_XZ "$out/$AE_IMG_RPI_NAME.img"
  (cd "$out" && sha256sum "$AE_IMG_RPI_NAME.img.xz" > "$AE_IMG_RPI_NAME.img.xz.sha256")
  log "rpi: $out/$AE_IMG_RPI_NAME.img.xz in $((SECONDS - t0)) s"
  echo "$out/$AE_IMG_RPI_NAME.img.xz"
}
