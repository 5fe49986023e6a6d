"""Tests of studies/tasks/hub.py and registry.py: hub-schema rows to items, sources, suites."""

import json

import pytest

from studies.tasks import hub, registry
from studies.tasks.registry import SUITES, TASKS, get_task, load_task, suite_tasks
from studies.tasks.schema import CodeItem, GenerationItem, MultipleChoiceItem, parse_item

# Rows in each dataset's hub schema (field names and types as the hub serves them).
MMLU_ROWS = [
    {"question": "What is 2 + 3?", "subject": "elementary_mathematics", "choices": ["4", "5", "6", "7"], "answer": 1},
    {"question": "Which is prime?", "subject": "elementary_mathematics", "choices": ["4", "6", "7", "8"], "answer": 2},
    {"question": "Capital of France?", "subject": "geography", "choices": ["Rome", "Paris", "Bonn", "Bern"], "answer": 1},
]
MMLU_DEV = [
    {"question": "1 + 1 = ?", "subject": "elementary_mathematics", "choices": ["2", "3", "4", "5"], "answer": 0},
    {"question": "Largest ocean?", "subject": "geography", "choices": ["Arctic", "Pacific", "Indian", "Atlantic"], "answer": 1},
    {"question": "3 * 3 = ?", "subject": "elementary_mathematics", "choices": ["6", "9", "12", "3"], "answer": 1},
]
CMMLU_ROWS = [{"Question": "中国的首都是哪里？", "A": "上海", "B": "北京", "C": "广州", "D": "深圳", "Answer": "B"}]
CMMLU_DEV = [{"Question": "一加一等于几？", "A": "1", "B": "2", "C": "3", "D": "4", "Answer": "B"}]
ARC_ROWS = [
    {"id": "Mercury_1", "question": "Which gas do plants absorb?",
     "choices": {"text": ["oxygen", "carbon dioxide", "helium"], "label": ["A", "B", "C"]}, "answerKey": "B"},
    {"id": "NYSEDREGENTS_2", "question": "What melts ice?",
     "choices": {"text": ["heat", "cold", "dark", "wind"], "label": ["1", "2", "3", "4"]}, "answerKey": "1"},
]
PIQA_ROWS = [{"goal": "Open a jar.", "sol1": "Twist the lid.", "sol2": "Freeze the jar.", "label": 0}]
GSM8K_ROWS = [{"question": "Tom has 3 apples and buys 4. How many?", "answer": "3 + 4 = <<3+4=7>>7\n#### 7"},
              {"question": "A shop sells 1,000 pens a day. How many in 2 days?", "answer": "1000*2=2000\n#### 2,000"}]
GSM8K_TRAIN = [{"question": f"What is {i} + 1?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"} for i in range(10)]
HUMANEVAL_ROWS = [{"task_id": "HumanEval/0", "prompt": "def add(a, b):\n    \"\"\"Add.\"\"\"\n",
                   "canonical_solution": "    return a + b\n", "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n",
                   "entry_point": "add"}]


def test_mmlu_prompt_follows_lm_eval_with_same_subject_shots():
    items = hub.convert_rows("mmlu", MMLU_ROWS[:2], fewshot_pool=MMLU_DEV, num_fewshot=2, group_key="subject")
    first = items[0]
    assert first["prompt"] == (
        "The following are multiple choice questions (with answers) about elementary mathematics.\n\n"
        "1 + 1 = ?\nA. 2\nB. 3\nC. 4\nD. 5\nAnswer: A\n\n"
        "3 * 3 = ?\nA. 6\nB. 9\nC. 12\nD. 3\nAnswer: B\n\n"
        "What is 2 + 3?\nA. 4\nB. 5\nC. 6\nD. 7\nAnswer:"
    )
    assert first["choices"] == [" A", " B", " C", " D"] and first["answer"] == 1
    assert isinstance(parse_item(first, "multiple_choice"), MultipleChoiceItem)
    with pytest.raises(ValueError, match="2-shot prompting needs 2 demonstration rows but the few-shot split has 1"):
        hub.convert_rows("mmlu", MMLU_ROWS[2:], fewshot_pool=MMLU_DEV, num_fewshot=2, group_key="subject")


def test_cmmlu_uses_chinese_answer_cue():
    (item,) = hub.convert_rows("cmmlu", CMMLU_ROWS, fewshot_pool=CMMLU_DEV, num_fewshot=1)
    assert item["prompt"].endswith("一加一等于几？\nA. 1\nB. 2\nC. 3\nD. 4\n答案： B\n\n"
                                   "中国的首都是哪里？\nA. 上海\nB. 北京\nC. 广州\nD. 深圳\n答案：")
    assert item["answer"] == 1 and item["choices"] == [" A", " B", " C", " D"]


def test_arc_maps_answer_key_through_labels_including_numeric_ones():
    items = hub.convert_rows("arc_challenge", ARC_ROWS)
    assert items[0]["prompt"] == "Question: Which gas do plants absorb?\nAnswer:"
    assert items[0]["choices"] == [" oxygen", " carbon dioxide", " helium"] and items[0]["answer"] == 1
    assert items[1]["answer"] == 0 and items[1]["id"] == "arc_challenge/NYSEDREGENTS_2"
    broken = dict(ARC_ROWS[0], answerKey="E")
    with pytest.raises(ValueError, match="answerKey 'E' is not among the labels"):
        hub.convert_rows("arc_challenge", [broken])


def test_piqa_and_unlabeled_test_split():
    (item,) = hub.convert_rows("piqa", PIQA_ROWS)
    assert item == {"id": "piqa/0", "prompt": "Question: Open a jar.\nAnswer:",
                    "choices": [" Twist the lid.", " Freeze the jar."], "answer": 0}
    with pytest.raises(ValueError, match="unlabeled"):
        hub.convert_rows("piqa", [dict(PIQA_ROWS[0], label=-1)])


def test_gsm8k_reference_and_fixed_random_shots():
    items = hub.convert_rows("gsm8k", GSM8K_ROWS, fewshot_pool=GSM8K_TRAIN, num_fewshot=4, sampler="random")
    assert [i["answer"] for i in items] == ["7", "2000"]
    shots = items[0]["prompt"].split("\n\n")
    assert len(shots) == 5 and all(s.startswith("Question: What is ") and "####" in s for s in shots[:4])
    assert shots[4] == "Question: Tom has 3 apples and buys 4. How many?\nAnswer:"
    assert items[0]["prompt"].split("Question: Tom")[0] == items[1]["prompt"].split("Question: A shop")[0]
    assert len({s.split("\n")[0] for s in shots[:4]}) == 4  # four distinct demonstrations
    with pytest.raises(ValueError, match="no '####'"):
        hub.gsm8k_reference("the answer is 3")


def test_humaneval_keeps_test_and_entry_point():
    (item,) = hub.convert_rows("humaneval", HUMANEVAL_ROWS)
    parsed = parse_item(item, "code")
    assert isinstance(parsed, CodeItem)
    assert (parsed.id, parsed.entry_point, parsed.answer) == ("HumanEval/0", "add", "    return a + b\n")
    assert parsed.test.startswith("def check(candidate)")


def test_hub_loading_converts_rows_with_shots(monkeypatch):
    """The hub path end to end, with datasets.load_dataset answering from the fixture rows."""
    import datasets

    dev = [dict(row, question=f"{row['question']} ({k})") for k in range(5) for row in MMLU_DEV]
    served = {("cais/mmlu", "all", "test"): MMLU_ROWS, ("cais/mmlu", "all", "dev"): dev,
              ("openai/gsm8k", "main", "test"): GSM8K_ROWS, ("openai/gsm8k", "main", "train"): GSM8K_TRAIN}
    calls = []

    def fake_load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        return list(served[(path, name, split)])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    items = load_task(get_task("mmlu"))
    assert calls == [("cais/mmlu", "all", "test"), ("cais/mmlu", "all", "dev")]
    assert [i.answer for i in items] == [1, 2, 1]
    for item, subject in zip(items, ("elementary mathematics", "elementary mathematics", "geography")):
        assert item.prompt.count("\nAnswer:") == 6  # five demonstrations and the question
        assert f"about {subject}." in item.prompt
    assert "Largest ocean? (0)" in items[2].prompt and "Largest ocean?" not in items[0].prompt
    gsm = load_task(get_task("gsm8k"), limit=1)
    assert len(gsm) == 1 and isinstance(gsm[0], GenerationItem) and gsm[0].prompt.count("####") == 4


def test_registry_suites_and_chance():
    assert [t.name for t in suite_tasks("paper6")] == ["mmlu", "arc_challenge", "cmmlu", "piqa", "gsm8k", "humaneval"]
    assert [t.name for t in suite_tasks("toyworld")] == ["toy_mc", "toy_forward", "toy_reverse", "toy_arithmetic"]
    assert [t.name for t in suite_tasks("piqa,gsm8k")] == ["piqa", "gsm8k"]
    assert len(registry.CMMLU_SUBJECTS) == len(set(registry.CMMLU_SUBJECTS)) == 67
    spec = get_task("gsm8k")
    assert (spec.hub.path, spec.hub.configs, spec.hub.split, spec.hub.fewshot_split, spec.num_fewshot) == (
        "openai/gsm8k", ("main",), "test", "train", 4)
    assert get_task("humaneval").hub.path == "openai/openai_humaneval" and get_task("piqa").chance == 0.5
    assert all(name in TASKS for names in SUITES.values() for name in names)
    with pytest.raises(ValueError, match="Did you mean mmlu"):
        get_task("mmlu5")
    with pytest.raises(ValueError, match="unknown suite"):
        suite_tasks("paper7")


def test_local_file_beats_tasks_dir_and_hub(tmp_path):
    item = {"id": "x", "prompt": "Question: Open a jar.\nAnswer:", "choices": [" Twist", " Freeze"], "answer": 0}
    explicit = tmp_path / "mine.jsonl"
    explicit.write_text(json.dumps(item) + "\n")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "piqa.jsonl").write_text(json.dumps(dict(item, id="from_dir")) + "\n")
    spec = get_task("piqa")
    assert load_task(spec, tasks_dir=tmp_path / "dir", task_files={"piqa": str(explicit)})[0].id == "x"
    assert load_task(spec, tasks_dir=tmp_path / "dir")[0].id == "from_dir"
    assert registry.task_source(spec, tasks_dir=tmp_path / "nowhere") == "hub:ybisk/piqa"
    with pytest.raises(FileNotFoundError, match="toy_mc.jsonl"):
        load_task(get_task("toy_mc"), tasks_dir=tmp_path / "nowhere")
