#!/usr/bin/env bash
# `make demo`: the local cluster with the hello app deployed and answering through the router.
set -euo pipefail
cd "$(dirname "$0")/.."
paas=.venv/bin/paas
$paas up
$paas deploy manifests/hello.yaml
$paas ps hello
router=$(.venv/bin/python -c 'from paas.localcluster import load_config, paas_home; print(load_config(paas_home()).router_listen)')
echo
echo "curl -H 'Host: hello.localhost' http://$router/"
curl -s --max-time 5 -H 'Host: hello.localhost' "http://$router/"
echo
echo "The cluster keeps running: try \`.venv/bin/paas status\`; stop it with \`make down\`."
