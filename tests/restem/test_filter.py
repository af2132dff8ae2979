"""ReST-EM domains without Lightning: collecting typed E-step records, the filters, the evidence,
held-out numbers, and the runner finding a domain from the E-step module's class."""

from __future__ import annotations

import json

import pytest

from seal_pl.arc.records import ArcEditRecord, ArcSelfEditRecord, SubtaskPrediction
from seal_pl.knowledge.records import KnowledgeSelfEdit
from seal_pl.pipelines.arc_restem import ArcDomain, ArcScoredSelfEdit, arc_scored_self_edits, keep_successes
from seal_pl.pipelines.knowledge_restem import KnowledgeDomain, best_of_k, round_evidence
from seal_pl.pipelines.restem import FilterOptions, ReSTEMDomain, domain_of_class, reward_statistics
from seal_pl.records import SFTExample, append


def scored(passage, index, reward, *, passage_only=None, baseline=0.0, copied=0.0, words=None) -> KnowledgeSelfEdit:
    return KnowledgeSelfEdit(
        id=f"{passage}/{index}",
        context_id=passage,
        passage_id=passage,
        edit_index=index,
        seed=0,
        prompt=f"P{passage}",
        completion=f"{passage}-{index}",
        reward=reward,
        accuracy_per_seed=[reward],
        baseline_accuracy=baseline,
        gain=reward - baseline,
        passage_only_accuracy=passage_only,
        gain_over_passage=None if passage_only is None else reward - passage_only,
        stats={
            "words": 10.0 * (index + 1) if words is None else words,
            "lines": 1.0,
            "entity_coverage": 0.5,
            "copied_line_share": copied,
        },
    )


def completions(kept: list[SFTExample]) -> list[str]:
    return [k.completion for k in kept]


def test_best_of_k_keeps_the_best_and_breaks_ties_by_index():
    records = [scored("a", 0, 0.2), scored("a", 1, 0.6), scored("a", 2, 0.6), scored("b", 0, 0.0), scored("b", 1, 0.0)]
    kept = best_of_k(records)
    assert completions(kept) == ["a-1", "b-0"]  # reference: the best is kept even with no gain
    assert kept[0].prompt == "Pa" and kept[0].id == "a/1" and kept[0].context_id == "a"
    assert completions(best_of_k(records, top_k=2)) == ["a-1", "a-2", "b-0", "b-1"]
    with pytest.raises(ValueError, match="top_k"):
        best_of_k(records, top_k=0)


def test_min_gain_over_either_baseline():
    records = [scored("a", 0, 0.6, baseline=0.2), scored("b", 0, 0.2, baseline=0.2), scored("c", 0, 0.1, baseline=0.2)]
    assert completions(best_of_k(records, min_gain=0.01)) == ["a-0"]
    records = [
        scored("a", 0, 0.5, passage_only=0.5),
        scored("a", 1, 0.25, passage_only=0.5),
        scored("b", 0, 0.75, passage_only=0.25),
    ]
    assert completions(best_of_k(records, min_gain=0.01, gain_over="passage_only")) == ["b-0"]
    assert completions(best_of_k(records, min_gain=0.01)) == ["a-0", "b-0"]  # over no_adaptation (0.0)
    with pytest.raises(ValueError, match="gain_over"):
        best_of_k(records, gain_over="nothing")


def test_max_copied_line_share_leaves_copies_out_before_ranking():
    records = [scored("a", 0, 0.75, copied=0.75), scored("a", 1, 0.5, copied=0.5), scored("b", 0, 0.5)]
    assert completions(best_of_k(records)) == ["a-0", "b-0"]
    assert completions(best_of_k(records, max_copied_line_share=0.5)) == ["a-1", "b-0"]  # the copy is out
    assert completions(best_of_k(records, max_copied_line_share=0.25)) == ["b-0"]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        best_of_k(records, max_copied_line_share=1.5)
    no_stats = scored("a", 0, 0.5)
    no_stats.stats = None
    with pytest.raises(ValueError, match="copied_line_share"):
        best_of_k([no_stats], max_copied_line_share=0.5)  # refused, not guessed


def test_round_evidence_counts_passages_whose_best_beats_passage_only():
    records = [
        scored("a", 0, 0.5, passage_only=0.5),
        scored("a", 1, 0.25, passage_only=0.5),
        scored("b", 0, 0.75, passage_only=0.25),
    ]
    kept = best_of_k(records)
    evidence = round_evidence(records, kept)
    assert evidence["best_beats_passage_only"] == 0.5  # a ties passage_only, b beats it
    assert evidence["self_edits"]["n"] == 3 and evidence["self_edits"]["words"] == pytest.approx(40 / 3)
    assert evidence["kept_self_edits"]["n"] == 2 and evidence["kept_self_edits"]["words"] == 10.0
    assert round_evidence([scored("a", 0, 0.5)], [])["best_beats_passage_only"] is None  # no passage_only run


def test_knowledge_domain_collects_the_latest_record_per_self_edit(tmp_path):
    for record in (scored("p1", 1, 0.5), scored("p1", 0, 0.2), scored("p0", 0, 0.1)):
        append(KnowledgeSelfEdit.shard(tmp_path, 0), record)
    rewritten = scored("p1", 0, 0.9)
    rewritten.completion = "rewritten"
    append(KnowledgeSelfEdit.shard(tmp_path, 1), rewritten)  # written again on resume: it wins
    domain = KnowledgeDomain()
    records = domain.collect(tmp_path)
    assert [r.id for r in records] == ["p0/0", "p1/0", "p1/1"] and records[1].completion == "rewritten"
    options = FilterOptions(top_k=1, min_gain=0.05, max_copied_line_share=0.5)
    kept = domain.select(records, options)
    assert completions(kept) == ["p0-0", "rewritten"]
    assert domain.rule(options) == "best 1 of K per passage, gain over no_adaptation >= 0.05, copied-line share <= 0.5"
    stats = reward_statistics(records, kept)
    assert stats["n"] == 3 and stats["kept"] == 2 and stats["max"] == 0.9 and stats["contexts"] == 2
    assert completions(domain.select(records, FilterOptions(min_gain=0.2))) == ["rewritten"]


def test_reward_statistics_histogram_and_unscored():
    records = [scored("a", i, r) for i, r in enumerate([1.0, 0.0, 1.0, 0.0])]
    stats = reward_statistics(records, [SFTExample.of(records[0])], bins=2)
    assert stats["mean"] == 0.5 and stats["max"] == 1.0 and stats["min"] == 0.0
    assert stats["histogram"] == [2, 2] and stats["kept_fraction"] == 0.25 and stats["contexts_kept"] == 1
    assert reward_statistics([], [])["n"] == 0


def test_knowledge_heldout_reads_the_table(tmp_path):
    (tmp_path / "results.json").write_text(
        json.dumps({"conditions": {"no_adaptation": {"accuracy": 0.0}, "self_edit": {"accuracy": 0.4}}})
    )
    numbers = KnowledgeDomain().heldout(tmp_path)
    assert numbers.metrics == {"no_adaptation": 0.0, "self_edit": 0.4} and numbers.headline == 0.4
    assert numbers.extras["samples"] == []


def _edit(task, index, reward, *, valid=True, reason=None, solved=None) -> ArcEditRecord:
    return ArcEditRecord(
        task_id=task,
        edit_index=index,
        mode="self_edit",
        prompt=[{"role": "user", "content": task}],
        completion="{}" if valid else "oops",
        valid=valid,
        reason=reason,
        trained=valid,
        subtasks=[]
        if solved is None
        else [
            SubtaskPrediction(
                subtask_id=f"{task}_0",
                attempts=[],
                solved=solved,
                n_views=1,
                n_decoded=1,
                max_new_tokens=8,
                voting="ref",
            )
        ],
        solved=None if reward is None else bool(reward),
        reward=reward,
    )


def test_arc_domain_joins_edits_and_samples_and_keeps_successes(tmp_path):
    edits = [_edit("t", 0, 1, solved=True), _edit("t", 1, 0, valid=False, reason="no json"), _edit("u", 0, None)]
    for edit in edits:
        append(ArcEditRecord.shard(tmp_path, 0), edit)
    sample = ArcSelfEditRecord(
        id="t/0", task_id="t", edit_index=0, seed=7, prompt=[], completion="{}", valid=True, reason=None, config=None
    )
    append(ArcSelfEditRecord.shard(tmp_path, 0), sample)
    domain = ArcDomain()
    records = domain.collect(tmp_path)
    assert all(isinstance(r, ArcScoredSelfEdit) for r in records)
    assert [r.seed for r in records] == [7, None, None]
    assert records[0].subtasks == {"t_0": True} and records[1].reason == "no json"
    kept = domain.select(records, FilterOptions())
    assert [k.id for k in kept] == ["t/0"] and domain.rule(FilterOptions()) == "every solved (task, self-edit) pair"
    assert [k.id for k in keep_successes(arc_scored_self_edits(edits))] == ["t/0"]
    stats = reward_statistics(records, kept)
    assert stats["n"] == 3 and stats["n_scored"] == 2 and stats["mean"] == 0.5


def test_domains_refuse_what_they_cannot_run():
    with pytest.raises(ValueError, match="self_edit condition"):
        KnowledgeDomain().check({"conditions": ["passage_only"]}, FilterOptions())
    with pytest.raises(ValueError, match="passage_only condition"):
        KnowledgeDomain().check({"conditions": ["self_edit"]}, FilterOptions(gain_over="passage_only"))
    with pytest.raises(ValueError, match="mode: self_edit"):
        ArcDomain().check({"mode": "icl"}, FilterOptions())
    with pytest.raises(ValueError, match="knowledge domain only"):
        ArcDomain().check({"mode": "self_edit"}, FilterOptions(max_copied_line_share=0.5))
    with pytest.raises(ValueError, match="top_k"):
        FilterOptions(top_k=0)


def test_the_e_step_module_class_names_its_domain():
    from seal_pl.lightning import ARCTTTModule, KnowledgeIncorporationModule

    assert isinstance(domain_of_class(KnowledgeIncorporationModule), KnowledgeDomain)
    assert isinstance(domain_of_class(ARCTTTModule), ArcDomain)
    with pytest.raises(TypeError, match="names no ReST-EM domain"):
        domain_of_class(ReSTEMDomain)
