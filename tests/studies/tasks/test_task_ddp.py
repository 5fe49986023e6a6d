"""evaluate_suite under torch.distributed (gloo, two processes): every rank scores a disjoint shard
and the torchmetrics reduction gives both ranks the score of the whole task."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

WORKER = r'''
import json, sys
import torch.distributed as dist
from studies.evaluate import evaluate_suite

class Adapter:
    """Picks choice 0 everywhere and records which items this rank saw."""
    seen = []
    def loglikelihood(self, requests):
        self.seen += sorted({prompt for prompt, _ in requests})
        return [0.0 if i == 0 else -1.0 for prompt, c in requests for i in [int(c.strip())]]

dist.init_process_group("gloo")
adapter = Adapter()
result = evaluate_suite(adapter, "toy_mc", tasks_dir=sys.argv[1])["toy_mc"]
json.dump({"result": result, "seen": adapter.seen}, open(sys.argv[2] + f"/rank{dist.get_rank()}.json", "w"))
dist.destroy_process_group()
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_agree_on_the_score_of_all_items(tmp_path):
    answers = [0, 1, 0, 0, 2, 0, 3]  # choice 0 is right for 4 of 7 items
    rows = [{"id": str(i), "prompt": f"P{i}", "choices": [" 0", " 1", " 2", " 3"], "answer": a}
            for i, a in enumerate(answers)]
    (tmp_path / "toy_mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = free_port()
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, str(script), str(tmp_path), str(tmp_path)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for report in reports:
        assert report["result"]["n"] == 7
        assert report["result"]["metrics"]["acc"] == 4 / 7
    assert sorted(reports[0]["seen"] + reports[1]["seen"]) == sorted(f"P{i}" for i in range(7))
    assert not set(reports[0]["seen"]) & set(reports[1]["seen"])
