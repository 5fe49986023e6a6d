"""studies.tasks.suite.evaluate_suite under torch.distributed (gloo, two processes): lm-eval gives
every rank a disjoint shard of the documents, rank 0 aggregates, and both ranks return the numbers
a single process gets for the whole task."""

import inspect
import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
LIMIT = 7


def tiny_lm(folder, objective):
    """The same tiny seeded untrained model of ``objective`` in every process, as an ``ArmMdmLM``."""
    import dataclasses

    import torch
    from tokenizers import Tokenizer

    from models.config import preset
    from models.lightning import LanguageModel
    from studies.data.layout import load_metadata
    from studies.tasks.lm_eval_model import ArmMdmLM

    meta = load_metadata(folder)
    torch.manual_seed(0)
    config = preset("tiny", vocab_size=meta["vocab_size"], causal=objective == "arm")
    module = LanguageModel(dataclasses.asdict(config), objective, total_steps=1, tokens_per_step=1,
                           mask_id=meta["special_ids"]["mask"]).eval()
    tokenizer = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
    return ArmMdmLM.from_module(module, tokenizer, special_ids=meta["special_ids"], mc_samples=4, batch_size=4)


WORKER = "from pathlib import Path\n\n" + inspect.getsource(tiny_lm) + r'''

import json, sys
import torch.distributed as dist
from studies.tasks.suite import evaluate_suite

folder, out, objective, limit = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
dist.init_process_group("gloo")
lm = tiny_lm(folder, objective)
seen = []  # the documents this rank scored (lm-eval pads a short rank with repeats of its last request)
score = lm.loglikelihood

def recording(requests, disable_tqdm=False):
    seen.extend(request.doc_id for request in requests)
    return score(requests, disable_tqdm=disable_tqdm)

lm.loglikelihood = recording
result = evaluate_suite(lm, "toy_mc", data_dir=folder, limit=limit, keep_records=True)["toy_mc"]
with open(f"{out}/rank{dist.get_rank()}.json", "w") as f:
    json.dump({"result": result, "seen": seen, "rank": lm.rank, "world_size": lm.world_size}, f)
dist.destroy_process_group()
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("objective", ["arm", "mdm"])
def test_two_ranks_agree_on_the_score_of_all_documents(objective, toy_data, tmp_path, monkeypatch):
    folder, _ = toy_data
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = free_port()
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", HF_DATASETS_OFFLINE="1",
                   HF_DATASETS_CACHE=str(tmp_path / f"hf{rank}"))
        procs.append(subprocess.Popen([sys.executable, str(script), str(folder), str(tmp_path), objective, str(LIMIT)],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [(r["rank"], r["world_size"]) for r in reports] == [(0, 2), (1, 2)]

    assert reports[0]["result"] == reports[1]["result"]  # rank 0's aggregate, broadcast
    result = reports[0]["result"]
    assert result["n"] == LIMIT
    assert set(result["metrics"]) == {"acc", "acc_norm", "acc_bytes"}

    shards = [set(r["seen"]) for r in reports]
    assert not shards[0] & shards[1]
    assert shards[0] | shards[1] == set(range(LIMIT))
    # 4 choices per document, each scored once; lm-eval pads the shorter rank with repeats of its last
    # request, so both ranks run as many requests
    assert len(reports[0]["seen"]) == len(reports[1]["seen"]) == 4 * max(map(len, shards))
    for report, shard in zip(reports, shards):
        counts = Counter(report["seen"])
        padding = len(report["seen"]) - 4 * len(shard)
        assert sorted(counts.values()) == [4] * (len(shard) - 1) + [4 + padding], counts
        assert padding == 0 or counts[report["seen"][-1]] == 4 + padding

    # the numbers one process gets for the whole task, on the same model and data
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    from studies.tasks.suite import evaluate_suite

    single = evaluate_suite(tiny_lm(folder, objective), "toy_mc", data_dir=folder, limit=LIMIT,
                            keep_records=True)["toy_mc"]
    assert (single["n"], single["chance"], single["source"], single["kind"]) == (
        result["n"], result["chance"], result["source"], result["kind"])
    # rank 0 gathered every rank's logged documents
    assert sorted(r["doc_id"] for r in result["records"]) == sorted(r["doc_id"] for r in single["records"]) \
        == list(range(LIMIT))
    # ARM: exact likelihoods; MDM: each document's masks come from its own generator. Either way the
    # shard a document lands in changes nothing (up to float summation order in a batch).
    assert result["metrics"] == pytest.approx(single["metrics"], abs=1e-12)
    scores = {r["doc_id"]: [resp[0][0] for resp in r["resps"]] for r in result["records"]}
    for record in single["records"]:
        assert scores[record["doc_id"]] == pytest.approx([resp[0][0] for resp in record["resps"]], abs=1e-5)
