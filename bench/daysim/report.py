"""The studio day's numbers: per trace and policy the queue wait, what was paid and for what, next to RunPod's
public prices, the policies compared, and one plot per trace (queue, pods by state, spend over the 24 h)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.daysim.engine import MAX_PODS, RunResult
from bench.daysim.traces import DAY_S
from bench.stats import percentile

RUNPOD_PER_IMAGE = 0.02  # RunPod's public price for one Qwen image
RUNPOD_PER_VIDEO_S = 0.30 / 5  # $0.30 per 5 s Wan 720p clip
LABELS = {
    "demand": "(a) demand",
    "serverless": "(b) serverless",
    "economic": "(c) economic",
    "economic_pref_gpu": "(c') economic, preference GPU",
}


def metrics(result: RunResult) -> dict[str, Any]:
    """One run's figures. The fleet's cost is split between images and video by their share of busy GPU-seconds."""
    waits = sorted(result.waits)
    cost = result.cost
    busy = result.image_busy_s + result.video_busy_s
    image_cost = cost * result.image_busy_s / busy if busy else 0.0
    video_cost = cost - image_cost
    running = result.running_s
    return {
        "policy": result.variant.policy,
        "gpu_type": result.variant.gpu_type,
        "gpu_price_per_hr": result.variant.price_per_hr,
        "requests": len(waits),
        "wait_p50_s": round(percentile(waits, 50), 1),
        "wait_p95_s": round(percentile(waits, 95), 1),
        "wait_p99_s": round(percentile(waits, 99), 1),
        "wait_max_s": round(waits[-1], 1) if waits else None,
        "paid_gpu_hours": round(running / 3600, 2),
        "busy_gpu_hours": round(result.busy_s / 3600, 2),
        "paid_idle_fraction": round((running - result.busy_s) / running, 3) if running else 0.0,
        "stopped_pod_hours": round(sum(p.stopped_s for p in result.pods) / 3600, 2),
        "pods_created": len(result.pods),
        "resumes": result.resumes,
        "failed_resumes": result.failed_resumes,
        "max_live_pods": result.max_live,
        "pods_left_at_end": sum(1 for p in result.pods if p.status.value != "terminated"),
        "cost_usd": round(cost, 2),
        "images": result.images,
        "video_seconds": result.video_s,
        "usd_per_image": round(image_cost / result.images, 4) if result.images else None,
        "usd_per_video_s": round(video_cost / result.video_s, 4) if result.video_s else None,
        "day_end_s": round(result.end_s, 1),
        "reconcile_passes": result.passes,
    }


def _change(new: float, old: float) -> float | None:
    return round((new - old) / old * 100, 1) if old else None


def compare(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """(c) against (b) and (a), and the saving of the scaling (same GPU) apart from that of the GPU choice."""
    found: dict[str, Any] = {}
    pairs = (("economic", "serverless"), ("economic", "demand"), ("economic_pref_gpu", "serverless"),
             ("economic_pref_gpu", "demand"), ("economic", "economic_pref_gpu"))  # fmt: skip
    for new, old in pairs:
        if new in rows and old in rows:
            a, b = rows[new], rows[old]
            found[f"{new}_vs_{old}"] = {
                "cost_change_pct": _change(a["cost_usd"], b["cost_usd"]),
                "p95_change_s": round(a["wait_p95_s"] - b["wait_p95_s"], 1),
                "p95_change_pct": _change(a["wait_p95_s"], b["wait_p95_s"]),
                "p50_change_s": round(a["wait_p50_s"] - b["wait_p50_s"], 1),
            }
    return found


def tables(sections: dict[str, dict[str, Any]]) -> str:
    """Markdown: per trace, one row per policy, then the comparisons."""
    lines = [
        "Run times come from the API document's generation-time table, which has one column: they do not depend "
        "on the GPU type, so a cheaper GPU here only costs less. RunPod's public prices for comparison: "
        f"${RUNPOD_PER_IMAGE:.2f} per Qwen image, ${RUNPOD_PER_VIDEO_S:.2f} per video second (a 5 s Wan 720p clip "
        f"$0.30). MAX_PODS={MAX_PODS}.",
        "",
    ]
    for trace, section in sections.items():
        lines += [f"### {trace} — {section['description']} ({section['requests']} requests)", "",
                  "| policy | GPU ($/h) | wait p50 / p95 / p99 s | paid GPU-h | paid idle | pods created | "
                  "resumes (failed) | total $ | $/image (RunPod 0.02) | $/video-s (RunPod 0.06) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, m in section["policies"].items():
            per_image = "-" if m["usd_per_image"] is None else f"{m['usd_per_image']:.4f}"
            per_video = "-" if m["usd_per_video_s"] is None else f"{m['usd_per_video_s']:.4f}"
            cells = [
                LABELS.get(name, name),
                f"{m['gpu_type'].removeprefix('NVIDIA ')} ({m['gpu_price_per_hr']:.2f})",
                f"{m['wait_p50_s']:.0f} / {m['wait_p95_s']:.0f} / {m['wait_p99_s']:.0f}",
                f"{m['paid_gpu_hours']:.2f}",
                f"{m['paid_idle_fraction'] * 100:.0f} %",
                m["pods_created"],
                f"{m['resumes']} ({m['failed_resumes']})",
                f"{m['cost_usd']:.2f}",
                per_image,
                per_video,
            ]
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
        lines.append("")
        for key, c in section["comparisons"].items():
            new, old = key.split("_vs_")
            lines.append(
                f"- {LABELS.get(new, new)} vs {LABELS.get(old, old)}: cost {c['cost_change_pct']:+.1f} %, "
                f"p95 wait {c['p95_change_s']:+.0f} s ({c['p95_change_pct']:+.1f} %), p50 {c['p50_change_s']:+.0f} s"
            )
        lines += ["", f"![{trace}]({trace}.png)", ""]
    return "\n".join(lines)


def plot(runs: Sequence[RunResult], path: Path) -> None:
    """One column per policy: queue length, pods by state (stacked), cumulative spend — over the day."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(3, len(runs), figsize=(4.2 * len(runs), 8.5), sharex=True, sharey="row",
                                squeeze=False)  # fmt: skip
    for column, run in enumerate(runs):
        hours = [s.t / 3600 for s in run.samples]
        queue, pods, spend = axes[0][column], axes[1][column], axes[2][column]
        label = LABELS.get(run.variant.name, run.variant.name)
        queue.set_title(f"{label}\n{run.variant.gpu_type.removeprefix('NVIDIA ')}", fontsize=9)
        queue.fill_between(hours, [s.queue for s in run.samples], step="post", color="tab:red", alpha=0.6, lw=0)
        states = (("busy", "tab:green"), ("idle", "tab:orange"), ("starting", "tab:blue"), ("stopped", "tab:gray"))
        pods.stackplot(hours, *[[getattr(s, state) for s in run.samples] for state, _ in states],
                       labels=[state for state, _ in states], colors=[c for _, c in states], step="post")  # fmt: skip
        spend.plot(hours, [s.cost for s in run.samples], color="black")
        spend.set_xlabel("hour of the day")
        for axis in (queue, pods, spend):
            axis.set_xlim(0, max(DAY_S, run.end_s) / 3600)
            axis.set_xticks(range(0, 25, 3))
            axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("requests waiting")
    axes[1][0].set_ylabel("pods")
    axes[2][0].set_ylabel("cumulative $")
    axes[1][0].legend(loc="upper left", fontsize=7)
    figure.suptitle(f"studio day: {runs[0].trace}", fontsize=11)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
