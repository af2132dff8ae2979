"""The TensorBoard board: no-op without a writer, curves continue, None values left out."""

from seal_pl.reporting import Board


class FakeWriter:
    def __init__(self):
        self.scalars, self.texts, self.flushed = [], [], 0

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def add_text(self, tag, text, step):
        self.texts.append((tag, text, step))

    def flush(self):
        self.flushed += 1


def test_without_a_writer_every_call_is_a_no_op():
    board = Board(None)
    board.scalar("a", 1.0, 0)
    board.text("t", "x", 0)
    board.curve("c", [1.0, 2.0])
    board.report({"a": 1.0}, "text")
    assert board.writer is None
    assert board.curve_steps == {"c": 2}  # steps still advance: a later writer continues the curve


def test_an_object_without_add_scalar_is_no_writer():
    assert Board(object()).writer is None


def test_curves_continue_across_boards_sharing_the_step_counts():
    writer, steps = FakeWriter(), {}
    Board(writer, steps).curve("loss", [3.0, 2.0])
    Board(writer, steps).curve("loss", [1.0])
    Board(writer, steps).curve("other", [5.0])
    assert writer.scalars == [("loss", 3.0, 0), ("loss", 2.0, 1), ("loss", 1.0, 2), ("other", 5.0, 0)]


def test_none_values_are_left_out_and_the_report_is_flushed():
    writer = FakeWriter()
    board = Board(writer)
    board.scalar("reward", None, 3)
    board.report({"accuracy": 0.5, "missing": None}, "table")
    assert writer.scalars == [("results/accuracy", 0.5, 0)]
    assert writer.texts == [("results", "```\ntable\n```", 0)]
    assert writer.flushed == 1
