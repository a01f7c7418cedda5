#!/usr/bin/env bash
# configs/distill.sh on a lent GPU that is held for a few minutes: the FER+ folders unpacked from a pack (the
# machine cannot read ../shared), one short probe that times an epoch of the teachers side by side and then of the
# students, and the teachers' and students' epochs chosen so that both schedules end, annealed, inside BUDGET_S
# seconds. Results go to $OUT: the students' weights and a tarball of the reports, summaries and logs.
#   here:  python -m ferlib.pack --data data --out .devicedata/pack
#   there: BUDGET_S=480 OUT=/some/folder bash configs/device_distill.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHON=${PYTHON:-python3} PYTHONUNBUFFERED=1
PY=$PYTHON
PACK=${PACK:-.devicedata/pack}
export DATA=${DATA:-data}
export REPORTS=${REPORTS:-runs/device_reports}
BUDGET_S=${BUDGET_S:-480}       # from the start of this script to the students' last epoch
TAIL_S=${TAIL_S:-45}            # kept back for the last scoring and the copies to $OUT
OUT=${OUT:?set OUT to the folder results go to}
probe_set=(); for kv in ${PROBE_SET:-}; do probe_set+=(--set "$kv"); done  # the probe alone (smoke: max_faces=200)
started=$(date +%s)
elapsed() { echo $(( $(date +%s) - started )); }
mkdir -p "$OUT" "$REPORTS" runs

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
if [ ! -f "$DATA/FER2013Test/label.csv" ]; then "$PY" -m ferlib.pack --unpack "$PACK" --data "$DATA" --no-progress; fi
echo "[$(elapsed) s] data ready"

probe=runs/probe
rm -rf "$probe"
probe_run() {  # name config workers settings... : 2 epochs, the second one timed
    local name=$1 config=$2 workers=$3; shift 3
    "$PY" -m ferlib.train --config "$config" --run-name "$name" --set "runs_dir=$probe" --set "data_dir=$DATA" \
        --set epochs=2 --set "num_workers=$workers" --set augment_on_device=true "$@" "${probe_set[@]}" \
        --no-progress > "$probe/$name.log" 2>&1 || { echo "probe $name failed:"; tail -5 "$probe/$name.log"; exit 1; }
}
mkdir -p "$probe"
eval "$(grep '^TEACHERS=' configs/distill.sh)"  # the teachers distill.sh trains (name:width:seed), probed alike
pids=() probe_teachers=()
for teacher in "${TEACHERS[@]}"; do
    IFS=: read -r name width seed <<< "$teacher"
    probe_run "t_$name" configs/teacher.toml 3 --set "width=$width" --set "seed=$seed" & pids+=($!)
    probe_teachers+=("$probe/t_$name/best.safetensors")
done
for pid in "${pids[@]}"; do wait "$pid"; done
echo "[$(elapsed) s] teachers probed"
teachers_setting="teachers=$(IFS=,; echo "${probe_teachers[*]}")"
probe_run s_d05 configs/student.toml 6 --set "$teachers_setting" --set distill_weight=0.5 & p1=$!
probe_run s_d10 configs/student.toml 6 --set "$teachers_setting" --set distill_weight=1.0 & p2=$!
for pid in $p1 $p2; do wait $pid; done
echo "[$(elapsed) s] students probed"

# each phase gets half of what is left; an epoch costs what the probe's second epoch took, plus a margin
read -r teacher_epochs student_epochs teacher_minutes student_minutes < <("$PY" - "$probe" "$BUDGET_S" "$(elapsed)" \
    "$TAIL_S" <<'EOF'
import glob, json, sys
probe, budget, spent, tail = sys.argv[1], *map(float, sys.argv[2:])
def epoch_seconds(prefix, margin):
    return margin * max(json.load(open(path))["history"][-1]["seconds"]
                        for path in glob.glob(f"{probe}/{prefix}_*/summary.json"))
phase = max(0.0, budget - spent - tail) / 2
# the students' margin is wider: the teachers are scored beside them
teacher, student = epoch_seconds("t", 1.15), epoch_seconds("s", 1.25)
print(f"epoch: teachers {teacher:.1f} s, students {student:.1f} s; {phase:.0f} s a phase", file=sys.stderr)
clamp = lambda n: max(4, min(80, int(n)))
# max_minutes stops a run that the probe misjudged (it counts training time, not validation)
epochs = clamp(phase / teacher), clamp(phase / student)
print(*epochs, *(round(max(phase, n * s) / 60 + 0.05, 2) for n, s in zip(epochs, (teacher, student))))
EOF
)
echo "[$(elapsed) s] teachers: $teacher_epochs epochs, students: $student_epochs epochs"

# the students' weights reach $OUT as they improve, so a run cut by the call's limit still returns them; in 15 MB
# pieces, since no file over 16 MiB comes back (cat student_d05.safetensors.* > student_d05.safetensors)
copy_students() {
    for name in student_d05 student_d10; do
        if [ -f "runs/$name/best.safetensors" ]; then
            cp "runs/$name/best.safetensors" "runs/$name.copy" \
                && split -b 15000000 -d "runs/$name.copy" "$OUT/$name.safetensors."
        fi
    done
}
(while sleep 20; do copy_students; done) & copier=$!
collect() {
    tar czf "$OUT/reports.tgz.part" "$REPORTS" runs/*.log runs/*/summary.json "$probe"/*.log 2>/dev/null || true
    mv "$OUT/reports.tgz.part" "$OUT/reports.tgz"
}
trap 'collect; kill $copier 2>/dev/null || true' EXIT

PARALLEL=1 WORKERS=3 \
    TEACHER_SET="epochs=$teacher_epochs patience=$teacher_epochs max_minutes=$teacher_minutes" \
    STUDENT_SET="epochs=$student_epochs patience=$student_epochs max_minutes=$student_minutes" \
    bash configs/distill.sh --set augment_on_device=true "$@"
kill $copier 2>/dev/null || true
copy_students
echo "[$(elapsed) s] done"
