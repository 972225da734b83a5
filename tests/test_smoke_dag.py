"""End to end: the smoke profile's whole Snakemake DAG, its dataset against the stored reference, DVC offline."""

import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from snakemake_jobs import job_blocks, job_field  # tests/, on the path via pytest's pythonpath

from crucible.cpu_kernels import PINNED, pin_cpu_kernels
from crucible.data.pointer import dvc_dir_hash, read_pointer

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
pytestmark = pytest.mark.slow


def run(*cmd, timeout=1200):
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def smoke_dag():
    for d in ("data/smoke", "results/smoke"):
        shutil.rmtree(ROOT / d, ignore_errors=True)
    r = run("snakemake", "--cores", "2", "--configfile", "config/smoke.yaml")
    assert r.returncode == 0, r.stderr[-4000:]
    return r


def test_smoke_dag_builds_everything(smoke_dag):
    import json

    import yaml

    res = ROOT / "results/smoke"
    fig = res / "paper/figures/dataset.png"
    assert fig.is_file() and fig.stat().st_size > 10_000
    assert (res / "paper/figures/dataset.pdf").is_file()
    cfg = yaml.safe_load((res / "config.yaml").read_text())
    for variant in cfg["cam"]["variants"]:  # every CAM variant trained and evaluated, with provenance
        ev = json.loads((res / f"cam/{variant}/seed0/eval.json").read_text())
        assert ev["provenance"]["git_commit"] and ev["provenance"]["dataset_hash"]
        if platform.machine().lower() in {"x86_64", "amd64"}:  # every job ran with the kernels asked for
            asked = dict(os.environ)
            pin_cpu_kernels(asked)  # what a job's `import crucible` makes of this environment
            assert ev["provenance"]["cpu_kernel_env"] == {k: asked.get(k, "") for k in PINNED}
        assert {r["condition"] for r in ev["rows"]} >= set(cfg["data"]["seen"])
    for cond in cfg["data"]["held_out"]:
        for n in cfg["cam"]["hotplug"]["n"]:
            hotplug = json.loads((res / f"cam/hotplug/{cond}/n{n}/seed0.json").read_text())["run"]
            assert hotplug["frozen_unchanged"] is True
    tok = {(r["metric"], r["backbone"]): r for r in json.loads((res / "tokenizer/eval.json").read_text())["rows"]}
    assert tok[("recon_fid", "judge-encoder")]["value"] >= 0 and tok[("psnr", None)]["value"] > 0
    assert tok[("recon_fid", "inception-v3-compat")]["status"] == "unavailable"  # no weights configured in smoke
    speed = json.loads((res / "speed/bench.json").read_text())
    by = {(r["variant"], r["condition"], r["metric"]): r["value"] for r in speed["rows"]}
    for variant in cfg["scvar"]["variants"]:  # every variant timed; the conditioning FLOPs fall with k
        assert by[(variant, None, "latency_b1_ms")] > 0 and by[(variant, None, "images_per_s_nokv")] > 0
    assert by[("uncond", None, "cond_gflops_per_image")] == 0
    assert by[("ecfm_k1", None, "cond_gflops_per_image")] > by[("ecfm_k2", None, "cond_gflops_per_image")] > 0
    assert by[("lora", None, "trainable_params")] < by[("lora", None, "params")]
    assert {c for (v, c, _m) in by if v == "cam"} == set(cfg["data"]["seen"]) | set(cfg["data"]["held_out"])
    for t in speed["timings"].values():  # every timed row keeps its quantiles and repeat count
        assert t["p10_ms"] <= t["median_ms"] <= t["p90_ms"] and t["repeats"] == cfg["evaluation"]["bench"]["repeats"]
    assert {f"{v}/-/latency_b1_ms" for v in cfg["scvar"]["variants"]} <= set(speed["timings"])
    for variant in cfg["scvar"]["variants"]:  # every SCVAR variant sampled and scored
        rows = json.loads((res / f"scvar/{variant}/seed0/eval.json").read_text())["rows"]
        metrics = {r["metric"] for r in rows if r["status"] == "ok"}
        assert {"fid", "kid_mean", "precision", "recall", "ctrl_depth_rmse", "ctrl_canny_f1", "judge_cosine"} <= metrics
        assert all(r["reason"] for r in rows if r["status"] == "unavailable")  # never a silent 0
    r = run("snakemake", "--cores", "2", "--configfile", "config/smoke.yaml", "--dry-run")
    assert r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr  # a second run has no job


def test_smoke_dataset_reproduces_the_stored_reference(smoke_dag):
    """The DAG's smoke data against the stored reference of its first scenes: scene parameters, file names and
    manifest exactly, pixels within evaluation/datasets/tolerances.yaml, since rendered floats differ in their last
    bits from one CPU to another (README "Data and DVC"). The file count is exact; the md5 in
    evaluation/datasets/smoke.yaml is DVC's record of the bytes on the machine that stored it."""
    from crucible.data.compare import compare_datasets, format_table, load_tolerances

    recorded = read_pointer(ROOT / "evaluation/datasets/smoke.yaml")
    assert dvc_dir_hash(ROOT / "data/smoke")["nfiles"] == recorded["nfiles"], recorded
    cmp = compare_datasets(ROOT / "evaluation/datasets/smoke_reference", ROOT / "data/smoke",
                           load_tolerances(ROOT / "evaluation/datasets/tolerances.yaml"), subset=True)
    assert cmp.ok, format_table(cmp) + "\n" + "\n".join(cmp.failures())


def test_cli_verify_decodes_the_smoke_dataset(smoke_dag):
    r = run("crucible", "data", "verify", "data/smoke")
    assert r.returncode == 0, r.stderr
    assert "files intact" in r.stdout


def test_variation_trains_the_tokenizer_with_other_seeds_beside_the_dags_own(smoke_dag):
    """`snakemake variation`: the extra seeds' tokenizers are trained with their own seed (other weights, other
    PSNR), the DAG's own is reused (seed 0 in the table is its eval.json), and none of it enters the results."""
    import json

    import pandas as pd

    from crucible.evaluation.results.baseline import results_provenance

    before = results_provenance(ROOT / "results/smoke")["result_files"]
    r = run("snakemake", "--cores", "2", "--configfile", "config/smoke.yaml", "--config",
            "variation={tokenizer_seeds: [0, 1]}", "--", "variation")
    assert r.returncode == 0, r.stderr[-4000:]
    assert "tokenizer_train" not in re.findall(r"^localrule (\w+):", r.stdout + r.stderr, flags=re.M)
    res = ROOT / "results/smoke"
    psnr = {}
    for name, path in (("seed0", res / "tokenizer/eval.json"), ("seed1", res / "variation/tokenizer/seed1/eval.json")):
        doc = json.loads(path.read_text())
        psnr[name] = next(r["value"] for r in doc["rows"] if r["metric"] == "psnr")
        assert doc["provenance"]["seed"] == int(name[4:])
    assert json.loads((res / "variation/tokenizer/seed1/model.json").read_text())["seed"] == 1
    table = pd.read_csv(res / "variation/tokenizer_seeds.csv").set_index("metric")
    assert (table.loc["psnr", "seed0"], table.loc["psnr", "seed1"]) == (psnr["seed0"], psnr["seed1"])
    assert psnr["seed0"] != psnr["seed1"] and table.loc["psnr", "n_seeds"] == 2
    assert results_provenance(res)["result_files"] == before  # not a result of the DAG


def test_misspelled_key_stops_snakemake_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("profile: smoke\ndata:\n  imge_size: 32\n")
    r = run("snakemake", "--cores", "1", "--configfile", str(bad), "--dry-run")
    out = r.stdout + r.stderr  # snakemake prints the parse error on stdout
    assert r.returncode != 0 and "unknown key(s) 'imge_size' in data" in out and "image_size" in out


def test_dvc_works_offline():
    r = run("dvc", "status", timeout=120)
    assert r.returncode == 0, r.stderr
    r = run("dvc", "repro", "--dry", timeout=120)
    assert r.returncode == 0, r.stderr
    assert "snakemake --cores all" in r.stdout


def _copy_tree(dst: Path) -> None:
    """The workflow, configs, protocol files and the smoke data/results, mtimes kept (nothing looks stale)."""
    for name in ("Snakefile", "environment.yml"):
        shutil.copy2(ROOT / name, dst / name)
    for name in ("workflow", "config", "evaluation", "data/smoke", "results/smoke"):
        shutil.copytree(ROOT / name, dst / name, symlinks=True)


def _declared_report_files(profile_paper: str) -> list[str]:
    """Every file the rules mark with report(f"...") (workflow/rules/*.smk), for one profile's paper folder."""
    from crucible.paper.tables import TABLES

    found = []
    for smk in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        for pattern in re.findall(r'report\(\s*f"([^"]+)"', smk.read_text()):
            paths = [pattern.replace("{PAPER}", profile_paper)]
            if "{name}" in pattern:  # the paper tables' comprehension over crucible.paper.tables.TABLES
                paths = [p.replace("{name}", name) for p in paths for name in TABLES]
            assert not any("{" in p for p in paths), f"{smk.name}: report({pattern}): a placeholder this test lacks"
            found += paths
    return found


def test_report_holds_every_declared_figure_and_table(smoke_dag, tmp_path):
    """`snakemake --report` of the smoke results: the front page (workflow/report/workflow.rst) and, byte for byte,
    every figure and table the rules declare with report(...), the runtime table from the jobs' benchmark files."""
    import zipfile

    import pandas as pd

    declared = _declared_report_files("results/smoke/paper")
    assert {"results/smoke/paper/figures/dataset.png", "results/smoke/paper/tables/runtime.html"} <= set(declared)
    r = run("snakemake", "--cores", "1", "--configfile", "config/smoke.yaml", "--report", str(tmp_path / "report.zip"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    with zipfile.ZipFile(tmp_path / "report.zip") as z:
        members = {name: z.read(name) for name in z.namelist() if name.startswith("report/data/raw/")}
        page = z.read("report/report.html").decode()
    by_name = {}
    for name, data in members.items():
        by_name.setdefault(name.rsplit("/", 1)[1], []).append(data)
    for path in declared:
        assert (ROOT / path).read_bytes() in by_name.get(Path(path).name, []), f"{path} is not in the report"
    assert "Frozen judges trained once on the rendered data" in page and "smoke profile" in page  # front page

    runtime = pd.read_csv(ROOT / "results/smoke/paper/tables/runtime.csv").set_index("rule")
    assert {"render_dataset", "tensors", "cam_train", "scvar_train", "judge_fit", "aggregate"} <= set(runtime.index)
    assert runtime.loc["cam_train", "jobs"] >= 5 and (runtime["wall_s_total"] > 0).all()
    assert runtime.loc["all rules", "jobs"] == runtime.drop("all rules")["jobs"].sum()


@pytest.fixture(scope="module")
def dvc_ablation(smoke_dag, tmp_path_factory):
    """README "Experiments with DVC" and "Adding an ablation" on the smoke profile, in a copy of the tree (so
    results/smoke stays as the other tests expect it): the project's DVC stage pointed at the smoke profile, the
    finished smoke run committed as its state, then `dvc exp run -S` adding the README's example variant (ECFM
    every 5th block, block 5 of the smoke depth 6). Returns (tree, the run's output, a shell in the tree)."""
    import yaml

    work = tmp_path_factory.mktemp("ablation") / "tree"
    work.mkdir()
    _copy_tree(work)
    shutil.copytree(ROOT / ".dvc", work / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp", "plots"))
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["reproduce"]
    smoke = {  # the project's stage, pointed at the smoke profile (config/smoke.yaml is merged over tiny.yaml)
        "cmd": stage["cmd"] + " --configfile config/smoke.yaml",
        "deps": [d for d in stage["deps"] if d != "src/crucible"],  # the code is the installed package here
        "params": [*stage["params"], {"config/smoke.yaml": None}],
        "outs": [{"results/smoke/paper/tables": {"cache": False, "persist": True}},
                 {"results/smoke/metrics.json": {"persist": True}}],
        "metrics": [{"results/smoke/paper/metrics.json": {"cache": False, "persist": True}}],
    }
    (work / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"reproduce": smoke}}, sort_keys=False))
    (work / ".gitignore").write_text("/data/\n/logs/\n/benchmarks/\n/.snakemake/\n/results/*\n!/results/smoke/\n"
                                     "/results/smoke/*\n!/results/smoke/paper/\n/results/smoke/paper/*\n"
                                     "!/results/smoke/paper/metrics.json\n")

    def sh(*cmd, timeout=300, check=True):
        r = subprocess.run(cmd, cwd=work, env={**ENV, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
                                               "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"},
                           capture_output=True, text=True, timeout=timeout)
        assert not check or r.returncode == 0, f"{cmd}: {r.stdout[-3000:]}{r.stderr[-3000:]}"
        return r if not check else r.stdout + r.stderr

    sh("git", "init", "-q")
    sh("dvc", "commit", "-f", "-q")  # the finished smoke run, recorded as the stage's state (dvc.lock)
    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "smoke run")
    assert "didn't change" in sh("dvc", "repro", "--dry")
    out = sh("dvc", "exp", "run", "-S", "config/smoke.yaml:+scvar.variants.ecfm_k5={variant: ecfm, ecfm_interval: 5}",
             timeout=1200)
    return work, out, sh


def test_dvc_experiment_reruns_only_the_changed_variant(dvc_ablation):
    """`dvc exp run -S` on the stage's params file adds a variant, DVC reruns the stage because a param changed,
    Snakemake runs that variant's jobs and the summaries (no render, no other training), and `dvc exp show`
    lists the params and the headline numbers only."""
    import json

    work, out, sh = dvc_ablation
    ran = [(rule, job_field(block, "wildcards")) for rule, block in job_blocks(out)]
    jobs = {rule for rule, _ in ran}
    assert "scvar_train" in jobs, out[-3000:]
    per_variant = [w for rule, w in ran if rule in ("scvar_train", "scvar_sample", "scvar_eval")]
    assert all("variant=ecfm_k5" in w for w in per_variant), ran
    assert not jobs & {"render_shard", "render_dataset", "tensors", "cam_train", "tokenizer_train", "judge_fit"}, jobs
    assert (work / "results/smoke/scvar/ecfm_k5/seed0/eval.json").is_file()

    diff = json.loads(sh("dvc", "params", "diff", "HEAD", "--json"))  # the applied experiment vs the smoke run
    assert diff["config/smoke.yaml"]["scvar.variants.ecfm_k5.ecfm_interval"]["new"] == 5
    shown = json.loads(sh("dvc", "exp", "show", "--json"))
    cols = set()
    for rev in shown:
        for exp in [rev, *[e for e in rev.get("experiments") or [] for e in e.get("revs", [])]]:
            for src in (exp.get("data") or {}).get("metrics", {}):
                cols.add(src)
    assert cols == {"results/smoke/paper/metrics.json"}, cols  # the headline numbers only, no baseline
    headline = json.loads((work / "results/smoke/paper/metrics.json").read_text())
    assert "ecfm_k5" in headline["scvar"] and set(headline["scvar"]["ecfm_k5"]) == {"ctrl_depth_rmse_m", "fid_judge"}


def test_ablation_is_compared_beside_the_stored_baseline(smoke_dag, dvc_ablation, tmp_path):
    """The smoke results pass against the stored smoke baseline; the added variant shows up as new beside the
    stored variants; a stored value perturbed past its tolerance makes `crucible compare` fail and name it."""
    import pandas as pd

    tol = str(ROOT / "evaluation/tolerances.yaml")
    r = run("crucible", "compare", "--results", "results/smoke", "--baseline", "evaluation/baselines/smoke", "--out",
            str(tmp_path / "plain"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    work, _, sh = dvc_ablation
    r = sh("crucible", "compare", "--results", "results/smoke", "--baseline", str(ROOT / "evaluation/baselines/smoke"),
           "--tolerances", tol, "--out", str(tmp_path / "new"), check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "scvar/ecfm_k5" in r.stdout.split("new variants (not in the baseline):")[1].splitlines()[0]
    cmp = pd.read_csv(tmp_path / "new/comparison.csv", keep_default_na=False)
    new = cmp[cmp["variant"] == "ecfm_k5"]
    assert len(new) and set(new["verdict"]) == {"new"}
    fid = cmp[(cmp["stage"] == "scvar") & (cmp["metric"] == "fid") & (cmp["condition"] == "gt_depth")]
    block = list(fid["variant"])
    assert block.index("ecfm_k5") == block.index("ecfm_k4") + 1  # beside the stored variants, in the same block

    perturbed = tmp_path / "baseline"
    shutil.copytree(ROOT / "evaluation/baselines/smoke", perturbed)
    s = pd.read_csv(perturbed / "summary.csv", keep_default_na=False)
    hit = (s["stage"] == "cam") & (s["variant"] == "full")
    hit &= (s["condition"] == "mean_seen") & (s["metric"] == "depth_rmse")
    assert hit.sum() == 1
    s.loc[hit, ["mean", "ci_lo", "ci_hi"]] = s.loc[hit, ["mean", "ci_lo", "ci_hi"]].astype(float) * 0.7
    s.to_csv(perturbed / "summary.csv", index=False)
    r = sh("crucible", "compare", "--results", "results/smoke", "--baseline", str(perturbed), "--tolerances", tol,
           "--out", str(tmp_path / "perturbed"), check=False)
    assert r.returncode == 1 and "REGRESSED cam/full/mean_seen/depth_rmse" in r.stderr, r.stderr[-3000:]
