#!/usr/bin/env bash
# Builds a Debian root filesystem for `docker import`, the local stand-in for the
# official debian:<suite>-slim image (deploy/local-images.sh calls it).
#
#   mkrootfs.sh SUITE MIRROR DIR
#
# debootstrap's minbase variant from MIRROR, then what the official slim images do:
# no recommends, no documentation or man pages, apt caches cleaned after every install,
# and a policy-rc.d so that installing a package never starts a service. Needs root
# and debootstrap (Debian's package of that name).
set -euo pipefail

suite=${1:?usage: mkrootfs.sh SUITE MIRROR DIR}
mirror=${2:?usage: mkrootfs.sh SUITE MIRROR DIR}
dir=${3:?usage: mkrootfs.sh SUITE MIRROR DIR}

rm -rf "$dir"
mkdir -p "$dir"
debootstrap --variant=minbase "$suite" "$dir" "$mirror" >&2

# apt sources: the same mirror for the suite and its updates; security updates from
# the mirror's -security archive when it is Debian's own, as in the official images.
security=${mirror%/debian}/debian-security
rm -f "$dir/etc/apt/sources.list"
cat >"$dir/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: ${mirror}
Suites: ${suite} ${suite}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${security}
Suites: ${suite}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF

# Never start services from package scripts inside an image build.
printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
chmod 0755 "$dir/usr/sbin/policy-rc.d"

# Slim: no docs, man pages or translations from later installs either.
cat >"$dir/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
EOF
cat >"$dir/etc/apt/apt.conf.d/docker-slim" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
find "$dir/usr/share/doc" -mindepth 2 -not -name copyright -not -type d -delete
find "$dir/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$dir"/usr/share/man/* "$dir"/usr/share/info/* "$dir"/var/cache/apt/archives/*.deb \
    "$dir"/var/cache/apt/*.bin "$dir"/var/lib/apt/lists/* "$dir"/var/log/*.log \
    "$dir"/var/cache/ldconfig/aux-cache
find "$dir/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
