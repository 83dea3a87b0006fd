#!/usr/bin/env bash
# Write the secret files kustomization.yaml's secretGenerator reads (deploy/k8s/secrets/*.env, mode 0600),
# with fresh random values for what Vibewave makes itself: the admin key, the webhook secret, the pod token
# key and one NATS password per user. RUNPOD_API_KEY is taken from the environment if set, else left for
# you to fill in runpod.env; storage.env stays empty (fill it for OUTPUT_STORE=s3). A file that exists is
# never overwritten: delete it to make a new one (then restart what uses it).
set -euo pipefail
cd "$(dirname "$0")"
umask 077
random() { python3 -c 'import secrets, sys; print(sys.argv[1] + secrets.token_urlsafe(32).replace("-", "x").replace("_", "y"))' "$1"; }
webhook_secret() { python3 -c 'import base64, secrets; print("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())'; }

write() {  # write FILE from stdin unless it exists
  if [ -e "$1" ]; then echo "kept    secrets/$1"; cat >/dev/null; else cat >"$1"; echo "wrote   secrets/$1"; fi
}

write runpod.env <<<"RUNPOD_API_KEY=${RUNPOD_API_KEY:-}"
printf 'VIBEWAVE_ADMIN_KEY=%s\nWEBHOOK_SECRET=%s\n' "$(random vwa_)" "$(webhook_secret)" | write api.env
printf 'VIBEWAVE_POD_TOKEN_KEY=%s\n' "$(random "")" | write pod-token.env
printf 'AWS_ACCESS_KEY_ID=\nAWS_SECRET_ACCESS_KEY=\n' | write storage.env
# letters first: nats-server reads `$VARIABLE` values as config values, and one that parses as a number fails
for user in api scheduler pod-manager executor observer; do printf '%s=%s\n' "$user" "$(random p)"; done | write nats-users.env
grep -q '^RUNPOD_API_KEY=.' runpod.env || echo "fill in RUNPOD_API_KEY in secrets/runpod.env before kubectl apply -k"
