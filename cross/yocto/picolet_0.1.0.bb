# Yocto/OpenEmbedded recipe for picolet: installs the prebuilt static binary from a picolet
# release tarball (scripts/release.sh); nothing is compiled, so no Rust toolchain is needed
# in the build. Put the tarball(s) next to this recipe, in files/:
#   cp dist/picolet-0.1.0-<target>.tar.gz <layer>/recipes-containers/picolet/files/
# (verify them against dist/SHA256SUMS first: local file:// sources carry no checksum).
# Runtime dependencies come from meta-virtualization (containerd, runc, cni).
SUMMARY = "Small Kubernetes node agent (kubelet) in one static binary"
DESCRIPTION = "picolet runs Kubernetes pods on small machines: static pods from a directory \
or URL, or pods bound to the node by an API server. It drives containerd's runc shim directly \
(no containerd or Docker daemon), pulls OCI images itself and uses CNI plugins."
SECTION = "admin"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://LICENSE;md5=3b83ef96387f14655fc854ddc3c6bd57"

# Release target per machine architecture (static musl, independent of the image's libc).
def picolet_target(d):
    return {
        'aarch64': 'aarch64-unknown-linux-musl',
        'x86_64': 'x86_64-unknown-linux-musl',
        'arm': 'armv7-unknown-linux-musleabihf',
    }.get(d.getVar('TARGET_ARCH'), 'unsupported')

PICOLET_TARGET = "${@picolet_target(d)}"
COMPATIBLE_HOST = "(x86_64|aarch64|arm).*-linux.*"

python () {
    # The arm build is ARMv7-A hard-float (VFPv3-D16): no ARMv5/ARMv6 (e.g. Raspberry Pi 1/Zero).
    if d.getVar('TARGET_ARCH') == 'arm' and not bb.utils.contains_any(
            'TUNE_FEATURES', 'armv7a armv7ve armv8a', True, False, d):
        raise bb.parse.SkipRecipe("picolet's arm binary needs ARMv7-A with VFP (TUNE_FEATURES armv7a)")
}

SRC_URI = "file://picolet-${PV}-${PICOLET_TARGET}.tar.gz"
# UNPACKDIR is WORKDIR before Yocto 5.1 (styhead), where it did not exist yet.
UNPACKDIR ??= "${WORKDIR}"
S = "${UNPACKDIR}/picolet-${PV}-${PICOLET_TARGET}"

inherit systemd features_check
REQUIRED_DISTRO_FEATURES = "systemd"
SYSTEMD_SERVICE:${PN} = "picolet.service"
SYSTEMD_AUTO_ENABLE = "enable"

do_configure[noexec] = "1"
do_compile[noexec] = "1"

do_install() {
    install -D -m 0755 ${S}/picolet ${D}${bindir}/picolet
    install -D -m 0644 ${S}/configs/config.yaml ${D}${sysconfdir}/picolet/config.yaml
    install -d ${D}${sysconfdir}/picolet/manifests
    install -D -m 0644 ${S}/configs/cni/10-picolet.conflist ${D}${sysconfdir}/cni/net.d/10-picolet.conflist
    install -D -m 0644 ${S}/configs/systemd/picolet.service ${D}${systemd_system_unitdir}/picolet.service
    sed -i -e 's,/usr/bin/picolet,${bindir}/picolet,' -e 's,/sbin/modprobe,${base_sbindir}/modprobe,' \
        ${D}${systemd_system_unitdir}/picolet.service
}

CONFFILES:${PN} = "${sysconfdir}/picolet/config.yaml ${sysconfdir}/cni/net.d/10-picolet.conflist"

# containerd ships containerd-shim-runc-v2, the shim picolet starts (the containerd daemon
# itself is not used); runc runs the containers; cni brings the network plugins (/opt/cni/bin).
RDEPENDS:${PN} = "virtual-containerd virtual-runc cni iptables"
# Pod networking and image rootfs; built-in kernel features make these no-ops.
RRECOMMENDS:${PN} = "kernel-module-overlay kernel-module-veth kernel-module-bridge \
    kernel-module-br-netfilter kernel-module-xt-masquerade kernel-module-xt-nat \
    kernel-module-xt-conntrack kernel-module-xt-comment kernel-module-xt-addrtype"

# Prebuilt, statically linked and already stripped by the release build: nothing to strip
# or split into -dbg, and no GNU_HASH/LDFLAGS to check on a static executable.
INHIBIT_PACKAGE_STRIP = "1"
INHIBIT_PACKAGE_DEBUG_SPLIT = "1"
INHIBIT_SYSROOT_STRIP = "1"
INSANE_SKIP:${PN} += "already-stripped ldflags"
