"""``JOB/report.md``: what a finished job did and found, for people who would rather read one page.

Throughput and time per stage, particles per tomogram and predicted class counts (streamed from
the Parquet parts), and — when the reduce stage ran — the clusters with their composition and
confidence, the candidates for new complexes (clusters the classifier is unsure about) and the
figures.
"""

from __future__ import annotations

from pathlib import Path

from dsmscale.io.job import JobFolder


def _timings(summary: dict) -> list[str]:
    lines = ["| stage | seconds |", "|---|---|"]
    lines += [f"| {k.removesuffix('_s')} | {v:.1f} |" for k, v in summary["timings_s"].items()]
    return lines


def _discovery(job: JobFolder, discovery: dict) -> list[str]:
    has_truth = any("true" in c for c in discovery["clusters"])
    lines = [f"## Discovery (k = {discovery['k']})", ""]
    if "ari" in discovery:
        lines += [f"Against the true classes: ARI {discovery['ari']:.2f}, NMI "
                  f"{discovery['nmi']:.2f}.", ""]
    low = set(discovery["low_confidence_clusters"])
    header = "| cluster | size | mean score | predicted classes |" + (
        " true classes |" if has_truth else "")
    lines += [header, "|---|---|---|---|" + ("---|" if has_truth else "")]
    for c in sorted(discovery["clusters"], key=lambda c: -c["size"]):
        if not c["size"]:
            continue
        mark = " **candidate**" if c["cluster"] in low else ""
        row = (f"| {c['cluster']}{mark} | {c['size']} | {c['mean_score']:.2f} | "
               + ", ".join(f"{k} {v}" for k, v in c["predicted"].items()) + " |")
        if has_truth:
            row += " " + ", ".join(f"{k} {v}" for k, v in c.get("true", {}).items()) + " |"
        lines.append(row)
    lines += ["", f"Candidates for new complexes (mean classifier score below 0.8 × the median): "
              f"{sorted(low) or 'none'}.", "",
              f"![t-SNE of the features]({job.tsne.relative_to(job.root)})", "",
              f"![cluster average densities]({job.cluster_gallery.relative_to(job.root)})", ""]
    if any("alignment_score" in c for c in discovery["clusters"]):
        lines += ["Averages aligned without a reference (a sample of each cluster's members); "
                  "mean correlation of the members with their average: " + ", ".join(
                      f"{c['cluster']}: {c['alignment_score']:.2f}" for c in discovery["clusters"]
                      if "alignment_score" in c) + ".", ""]
    if discovery.get("silhouette_by_k"):
        best = max(discovery["silhouette_by_k"], key=discovery["silhouette_by_k"].get)
        lines += [f"Choosing k: silhouette on a sample is highest at k = {best} "
                  f"({', '.join(f'{k}: {v:.3f}' for k, v in discovery['silhouette_by_k'].items())}).",
                  ""]
    return lines


def _throughput(summary: dict) -> str:
    if summary["particles_per_s"] is None:
        return "every work unit was finished by an earlier run of this job"
    return (f"{summary['end_to_end_per_s']:.1f} particles/s over the whole job "
            f"({summary['particles_per_s']:.1f}/s in the inference stage)")


def write_job_report(job: JobFolder, summary: dict, discovery: dict | None) -> Path:
    """Write ``JOB/report.md`` from the job summary and the discovery summary (if any)."""
    counts = job.value_counts("class_name")
    lines = [
        "# dsmscale job report", "",
        f"{summary['particles']} particles in {summary['tomograms']} tomogram(s); model "
        f"`{summary['model']}`; {_throughput(summary)}.", "",
        *[f"**Warning:** {line}  " for line in summary.get("warnings", [])],
        *_timings(summary), "",
        "## Particles per tomogram", "", "| tomogram | particles |", "|---|---|",
        *[f"| {t} | {n} |" for t, n in sorted(job.value_counts("tomogram").items())],
        "",
    ]
    if counts:
        lines += ["## Predicted classes", "", "| class | particles |", "|---|---|",
                  *[f"| {c} | {n} |" for c, n in counts.most_common()], ""]
    if discovery:
        lines += _discovery(job, discovery)
    job.report.write_text("\n".join(lines) + "\n")
    return job.report
