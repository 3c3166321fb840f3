"""Write the demo dataset: customer-support tickets triaged into a fixed JSON format.

A task where a 135M model visibly changes behaviour after minutes of CPU training: the base model
chats; the tuned one answers with exactly ``{"category": ..., "urgency": ...}``. Deterministic
(seeded); run it to regenerate ``src/tailored/examples/triage_*.jsonl``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SYSTEM = "Triage the support ticket. Answer with JSON only."
OUT = Path(__file__).resolve().parents[1] / "src" / "tailored" / "examples"

TOPICS = {
    "billing": [
        "I was charged twice for my {plan} subscription this month",
        "my invoice shows {amount} but I expected a lower price",
        "please refund the {amount} you took from my card",
        "why did my {plan} plan renew without asking me",
        "the discount code was not applied to my last payment",
        "I need a copy of my invoice for {month}",
        "my card was declined but the money left my account",
    ],
    "technical": [
        "the app crashes every time I open the {feature} page",
        "I get error {code} when I try to upload a file",
        "the {feature} button does nothing on my phone",
        "sync stopped working after the last update",
        "the website is extremely slow since {month}",
        "exports to PDF come out blank",
        "notifications stopped arriving on my {device}",
    ],
    "shipping": [
        "my order {order} has not arrived yet",
        "the tracking number for order {order} does not work",
        "the package arrived damaged and the box was open",
        "I received the wrong item in order {order}",
        "can I change the delivery address for order {order}",
        "the courier says delivered but I have nothing",
    ],
    "account": [
        "I cannot log in, the password reset email never comes",
        "please delete my account and all my data",
        "how do I change the email address on my account",
        "someone else may have access to my account",
        "my account was locked after too many attempts",
        "I want to add a second user to my {plan} account",
    ],
    "feedback": [
        "I love the new {feature} page, great work",
        "it would be nice to have a dark mode",
        "your support agent {name} was very helpful",
        "please add an option to export to CSV",
        "the new design is confusing, I liked the old one better",
        "just wanted to say the {feature} feature saves me hours",
    ],
}
HIGH = ["This is urgent!", "I need this fixed today.", "Please help ASAP.", "This is blocking my whole team.",
        "I have a deadline in one hour!", "URGENT:"]
LOW = ["No rush.", "Whenever you have time.", "Just letting you know.", "Not urgent at all.", "Thanks in advance."]
OPENERS = ["Hi,", "Hello,", "Hey team,", "Good morning,", "", "", "Dear support,"]
SLOTS = {
    "plan": ["Pro", "Basic", "Team", "Premium"], "amount": ["$49", "$120", "$9.99", "€30"],
    "month": ["March", "June", "October", "last month"], "feature": ["reports", "dashboard", "calendar", "search"],
    "code": ["500", "E42", "403", "timeout"], "device": ["iPhone", "Android phone", "laptop", "tablet"],
    "order": ["#10293", "#55821", "#77310", "#40112"], "name": ["Maria", "Tom", "Aiko", "Sam"],
}


def ticket(rng: random.Random, category: str) -> tuple[str, str]:
    text = rng.choice(TOPICS[category]).format(**{k: rng.choice(v) for k, v in SLOTS.items()})
    urgency = "low" if category == "feedback" else rng.choice(["high", "normal", "normal", "low"])
    opener = rng.choice(OPENERS)
    body = (text[0].upper() if not opener else text[0]) + text[1:] + "."
    extra = rng.choice(HIGH) if urgency == "high" else rng.choice(LOW) if urgency == "low" else ""
    parts = [p for p in (opener, body if urgency != "high" or rng.random() < 0.5 else f"{extra} {body}",
                         extra if urgency != "high" else "") if p]
    content = " ".join(dict.fromkeys(parts)) if urgency != "high" else " ".join(parts)
    if urgency == "high" and extra not in content:
        content += " " + extra
    return content.strip(), urgency


def rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    cats = list(TOPICS)
    out, seen = [], set()
    while len(out) < n:
        cat = cats[len(out) % len(cats)]
        content, urgency = ticket(rng, cat)
        if content in seen:
            continue
        seen.add(content)
        answer = json.dumps({"category": cat, "urgency": urgency})
        out.append({"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": content},
                                 {"role": "assistant", "content": answer}]})
    rng.shuffle(out)
    return out


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    data = rows(280, seed=7)
    train, val = data[:240], data[240:]
    for name, part in (("triage_train.jsonl", train), ("triage_validation.jsonl", val)):
        (OUT / name).write_text("".join(json.dumps(r) + "\n" for r in part))
        print(f"{OUT / name}: {len(part)} examples")


if __name__ == "__main__":
    main()
