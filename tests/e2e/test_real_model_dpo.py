"""DPO on a real model with default settings: `.venv/bin/python -m pytest tests/e2e/test_real_model_dpo.py -x -q`.

SmolLM2-135M-Instruct (the real GGUF, fixture `real_gguf`), through the CLI with no hyperparameter
flags. DPO on pairs whose chosen reply is the rejected one in capitals (a preference the base model
does not have: it gives the capitalised reply a far lower log-probability) moves the preference on
held-out pairs it never saw.
"""

from __future__ import annotations

import json
import pytest

from tests.conftest import cli, write_jsonl

pytestmark = pytest.mark.slow

REPLIES = [
    ("Greet a new customer.", "Hello and welcome, how can I help you today?"),
    ("Say thanks to a colleague.", "Thank you so much for your help with the report."),
    ("Decline a meeting invite.", "Sorry, I cannot attend the meeting on Friday."),
    ("Reply to a late delivery complaint.", "We are sorry about the delay and will fix it today."),
    ("Ask a friend for a favour.", "Could you please help me move on Saturday?"),
    ("Tell a customer the shop hours.", "We are open from nine to six every weekday."),
    ("Apologise for a mistake.", "I am sorry, that was my mistake and I will correct it."),
    ("Wish someone a happy birthday.", "Happy birthday, I hope you have a wonderful day."),
    ("Tell a user their password was reset.", "Your password was reset and you can sign in again."),
    ("Welcome a new team member.", "Welcome to the team, we are glad you joined us."),
    ("Answer a question you cannot answer.", "I am not sure, but I will find out for you."),
    ("Confirm a table reservation.", "Your table for two is booked for seven tonight."),
    ("Remind a colleague of a deadline.", "Just a reminder that the report is due on Monday."),
    ("Congratulate a friend on a new job.", "Congratulations on the new job, you deserve it."),
    ("Tell a guest where the station is.", "The station is two streets north of the hotel."),
    ("Ask for feedback on a draft.", "Could you read my draft and tell me what to improve?"),
    ("Cancel a subscription for a user.", "Your subscription is cancelled and you will not be charged."),
    ("Say goodbye at the end of a call.", "Thank you for calling, have a good evening."),
    ("Announce a short office closure.", "The office will be closed on Thursday afternoon."),
    ("Invite a colleague to lunch.", "Would you like to have lunch with me tomorrow?"),
    # held out: never trained on
    ("Thank a customer for their order.", "Thank you for your order, it ships tomorrow."),
    ("Tell a student their exam is graded.", "Your exam has been graded and the results are online."),
    ("Offer help to a lost visitor.", "Can I help you find the room you are looking for?"),
    ("Welcome a guest to the hotel.", "Welcome to our hotel, your room is ready."),
    ("Apologise for a late reply.", "Sorry for my late reply, I was away this week."),
    ("Tell a user their parcel arrived.", "Your parcel has arrived and is waiting at the desk."),
    ("Ask a neighbour to water plants.", "Could you water my plants while I am away?"),
    ("Confirm a doctor's appointment.", "Your appointment is confirmed for Tuesday at ten."),
]
TRAIN, HELD = REPLIES[:20], REPLIES[20:]


def pairs(replies):
    return [{"prompt": p, "chosen": r.upper(), "rejected": r} for p, r in replies]


def test_dpo_defaults_move_the_preference_on_held_out_pairs(home, real_gguf, real_model_folder, tmp_path):
    converted = real_model_folder
    from tuneloop.evaluation.quick import load_for_eval, preference_accuracy

    base, tok = load_for_eval(str(converted))
    acc_before, before = preference_accuracy(base, tok, pairs(HELD))
    del base
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs(TRAIN))
    r = cli("tune", "--technique", "dpo", "--dataset", str(data), "--model", str(real_gguf), timeout=1800)
    assert r.returncode == 0, r.stdout + r.stderr
    [job] = json.loads(cli("status", "--json").stdout)
    assert job["state"] == "completed", job
    tuned, tok = load_for_eval(str(converted), job["output_path"])
    acc_after, after = preference_accuracy(tuned, tok, pairs(HELD))
    moved = [a - b for a, b in zip(after, before)]
    report = {"accuracy": [acc_before, acc_after], "margins_before": before, "margins_after": after}
    print(json.dumps(report, indent=1))
    assert all(m > 0 for m in moved), report              # every held-out pair moved towards chosen
    assert sum(moved) / len(moved) > 1.0, report          # by more than a nat on average
