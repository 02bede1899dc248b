#!/usr/bin/env bash
# Installs what paas needs on Debian 12 and makes the venv. Idempotent: only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pair in dockerd:docker.io etcd:etcd-server nginx:nginx docker-registry:docker-registry \
            git:git curl:curl make:make ssh:openssh-client ssh-keygen:openssh-client \
            debootstrap:debootstrap; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need_apt+=("${pair#*:}")
done
# the base image needs a static busybox (ldd fails on a static binary)
{ [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; } || need_apt+=(busybox-static)
python3 -c 'import ensurepip, venv' 2>/dev/null || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: apt-get install ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# Under systemd, Debian starts etcd and the registry on the ports paas up wants: paas runs its own.
if [ -d /run/systemd/system ]; then
    systemctl disable --now etcd docker-registry 2>/dev/null || true
fi

if [ ! -x .venv/bin/paas ] || [ pyproject.toml -nt .venv/.installed ]; then
    echo "setup: python venv in .venv"
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
    touch .venv/.installed
fi
