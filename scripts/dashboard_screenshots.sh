#!/usr/bin/env bash
# Screenshots of what a user sees in the MLflow dashboard (docs/dashboard_*.png), with headless Chromium.
#   bash scripts/dashboard_screenshots.sh [TRACKING_DB] [RUN_NAME]
# TRACKING_DB: an sqlite file written by platform.train (default: ./mlflow.db); RUN_NAME: the run whose page
# and rollout video are shown (default: the newest run of kind "train"). Needs `chromium` (apt-get install
# chromium). Serves the UI on a free local port for the duration of the script.
set -euo pipefail
cd "$(dirname "$0")/.."
DB="$(realpath "${1:-mlflow.db}")"
RUN_NAME="${2:-}"
OUT="${OUT:-docs}"
PY=.venv/bin/python
PORT="$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
URI="sqlite:///$DB"
ART="$(dirname "$DB")/mlartifacts"

$PY -m mlflow ui --backend-store-uri "$URI" --default-artifact-root "$ART" --host 127.0.0.1 --port "$PORT" \
    >/tmp/dashboard_ui.log 2>&1 &
UI_PID=$!
trap 'kill $UI_PID 2>/dev/null || true' EXIT
for _ in $(seq 120); do
    curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
    sleep 1
done

read -r EXP RUN VIDEO < <($PY - "$URI" "$RUN_NAME" <<'EOF'
import sys
from mlflow.tracking import MlflowClient

uri, name = sys.argv[1], sys.argv[2]
client = MlflowClient(tracking_uri=uri)
exp = client.get_experiment_by_name("minidiffuser")
flt = f"attributes.run_name = '{name}'" if name else "tags.`platform.kind` = 'train'"
run = client.search_runs([exp.experiment_id], flt, order_by=["attributes.start_time DESC"], max_results=1)[0]
video = "-"
for folder in client.list_artifacts(run.info.run_id, "videos"):
    files = [a.path for a in client.list_artifacts(run.info.run_id, folder.path) if a.path.endswith(".gif")]
    if files:
        video = sorted(files)[0]
print(exp.experiment_id, run.info.run_id, video)
EOF
)
BASE="http://127.0.0.1:$PORT/#/experiments/$EXP"
shot() {  # name url [width,height]
    chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars --window-size="${3:-1920,1100}" \
        --virtual-time-budget=25000 --screenshot="$OUT/$1" "$2" 2>/dev/null
    echo "[dashboard] $OUT/$1 <- $2"
}
shot dashboard_experiment.png "$BASE/runs?workflowType=machine_learning&viewStateShareKey=platform"
shot dashboard_run.png "$BASE/runs/$RUN/model-metrics?workflowType=machine_learning" 1920,2000
if [ "$VIDEO" != "-" ]; then
    shot dashboard_video.png "$BASE/runs/$RUN/artifacts/$VIDEO?workflowType=machine_learning"
fi
