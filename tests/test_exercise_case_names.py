"""The Chinese edition's verdicts name their cases in Chinese: every Case of every exercise has
a name in both editions, and a check run with NNPAR_LANG=zh prints the Chinese one, for the
cases that pass, the case that fails, and a case on ranks ("…，3 个进程中的 rank 2")."""

import re
import types

import numpy as np
import pytest
import torch

import nnpar_lite.distributed
from nnpar_lite.exercises import all_exercises, check
from nnpar_lite.exercises.core import Case, case_names

# What a Chinese case name may keep of English: a process's rank, ZeRO, the online softmax's lse.
KEPT = {"rank", "ZeRO", "lse"}
FUNCTION_EXERCISES = sorted(i for i, e in all_exercises().items() if isinstance(e.solution, types.FunctionType))


def english_words(text: str) -> list[str]:
    """The English words (three letters or more) in ``text``, those a Chinese text keeps aside."""
    return [w for w in re.findall(r"[A-Za-z]{3,}", text) if w not in KEPT]


@pytest.fixture
def chinese(monkeypatch):
    monkeypatch.setenv("NNPAR_LANG", "zh")


@pytest.fixture
def cases_sent_to_ranks(monkeypatch):
    """Records the cases a check sends to ranks; no process starts, and every rank reports its
    case passed (the same tensor as expected and as got)."""
    sent = []

    def launch(worker, world_size, carried, driver, cases, folder, timeout=None):
        sent.extend(cases)
        same = torch.arange(3.0)
        return [[(same, same, {}) for _ in cases] for _ in range(world_size)]

    monkeypatch.setattr(nnpar_lite.distributed, "launch", launch)
    return sent


def test_a_case_needs_a_name_in_both_editions():
    with pytest.raises(TypeError, match="pair of texts"):
        Case("uneven sizes", ())
    with pytest.raises(TypeError, match="pair of texts"):
        Case(("uneven sizes", " "), ())
    assert Case(("K = 1", "K = 1"), ()).name == ("K = 1", "K = 1")


def test_case_names_are_listed_in_the_editions_language(monkeypatch):
    cases = [Case(("two equal shards", "两个大小相同的分片"), ()), Case(("K = 1", "K = 1"), ())]
    assert case_names(cases) == "two equal shards, K = 1"
    monkeypatch.setenv("NNPAR_LANG", "zh")
    assert case_names(cases) == "两个大小相同的分片；K = 1"


@pytest.mark.parametrize("exercise_id", FUNCTION_EXERCISES)
def test_every_case_of_an_exercise_is_named_in_chinese(capsys, chinese, cases_sent_to_ranks, exercise_id):
    """The solution passes every case (in one process, or on ranks that the test stands in for),
    and the verdict lists every case by its Chinese name, in which no English is left."""
    exercise = all_exercises()[exercise_id]
    assert check(exercise_id, exercise.solution)
    printed = capsys.readouterr().out
    listed = re.search(r"✔ 全部 (\d+) 个用例通过（(.*)）。", printed)
    assert listed, printed
    if cases_sent_to_ranks:
        names = [case.name[1] for case in cases_sent_to_ranks]
        assert "个进程上：" in listed.group(2), printed
    else:
        names = listed.group(2).split("；")
        assert len(names) == int(listed.group(1)), printed
    assert names and all(name.strip() and name in listed.group(2) for name in names), printed
    assert not [n for n in names if english_words(n)], f"{exercise_id}: English in {names}"


def test_the_first_failing_case_is_named_in_chinese(capsys, chinese):
    def plain_mean(shard_means, shard_sizes):
        return sum(shard_means) / len(shard_means)

    assert not check("00.3", plain_mean)
    printed = capsys.readouterr().out
    assert "✘ 用例 大小不等的 10 和 30：应为 " in printed and "简单平均" in printed, printed
    assert not english_words(printed.split("卡住了")[0].replace("hint", "")), printed


def test_a_case_on_ranks_is_named_in_chinese_with_its_rank(capsys, chinese, monkeypatch):
    """A wrong result on rank 1 of 2: the verdict names the case and the rank in Chinese."""
    def launch(worker, world_size, carried, driver, cases, folder, timeout=None):
        right, wrong = np.arange(3.0), np.arange(3.0) + 1
        return [[(right, right, {}) for _ in cases]] + [[(right, wrong, {}) for _ in cases]] * (world_size - 1)

    monkeypatch.setattr(nnpar_lite.distributed, "launch", launch)
    assert not check("03.4", all_exercises()["03.4"].solution)
    printed = capsys.readouterr().out
    assert "✘ 用例 长度 1001，2 个进程中的 rank 1：" in printed, printed


def test_the_english_edition_names_cases_in_english(capsys, cases_sent_to_ranks):
    assert check("03.4", all_exercises()["03.4"].solution)
    assert "✔ all 24 cases pass (length 1001, length 3, length 1, length 0 on 2 ranks; length 1001, " \
           in capsys.readouterr().out
