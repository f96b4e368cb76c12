"""A public-style intent classification set of our own making: 40 banking intents, short
customer messages, tens of thousands of rows on request.

It stands in for the sets users swap in (banking77, CLINC-style): many classes, short texts,
near-neighbour intents that share their words (a lost card vs a stolen one, a pending transfer vs
a failed one), slot values, greetings, typos and 2% label noise, so no keyword list and no
fine-tuned model scores 1.0. Used by `benchmarks/defaults_check.py` to choose and check the
training defaults on data other than the demo's (never on a test split).

    from tunegate.demo_data.intents import generate_intents
    rows = generate_intents(n=20000, seed=0)  # [{"utterance": ..., "intent": ...}, ...]
"""

from __future__ import annotations

import random

INTENTS: dict[str, list[str]] = {
    "card_lost": [
        "i lost my {card}",
        "i can't find my {card} anywhere",
        "my {card} is missing, i think i dropped it",
        "misplaced my {card} yesterday",
    ],
    "card_stolen": [
        "someone stole my {card}",
        "my {card} was stolen from my bag",
        "i think my {card} got stolen in {city}",
        "a thief took my wallet with the {card}",
    ],
    "card_not_working": [
        "my {card} is not working",
        "the {card} keeps getting declined at {merchant}",
        "why does my {card} not work at the terminal",
        "{card} rejected every time i pay",
    ],
    "card_arrival": [
        "when will my new {card} arrive",
        "my {card} still hasn't arrived",
        "how long does delivery of the {card} take",
        "i ordered a {card} weeks ago and nothing came",
    ],
    "activate_card": [
        "how do i activate my {card}",
        "i got the {card}, how do i turn it on",
        "activation of the new {card} fails",
        "need to activate my {card} before i travel to {city}",
    ],
    "card_limit": [
        "can you raise the limit on my {card}",
        "what is the spending limit of my {card}",
        "i want a higher limit on the {card}",
        "my {card} limit is too low for {amount}",
    ],
    "pin_change": [
        "how can i change my pin",
        "i want a new pin for my {card}",
        "can i reset the pin on the {card}",
        "change pin please",
    ],
    "pin_blocked": [
        "my pin is blocked",
        "i entered the wrong pin three times and now it's locked",
        "the {card} pin got blocked at the atm",
        "unblock my pin",
    ],
    "transfer_pending": [
        "my transfer of {amount} is still pending",
        "why is the transfer to {name} pending",
        "the payment i sent on {day} shows as pending",
        "transfer stuck in pending status",
    ],
    "transfer_failed": [
        "my transfer of {amount} failed",
        "the transfer to {name} did not go through",
        "why did my payment on {day} fail",
        "transfer failed with an error",
    ],
    "transfer_fee": [
        "how much does a transfer of {amount} cost",
        "is there a fee for sending money to {city}",
        "i was charged a fee for my transfer",
        "what are the transfer charges",
    ],
    "transfer_cancel": [
        "can i cancel the transfer i made on {day}",
        "stop my payment to {name}",
        "i sent {amount} by mistake, cancel it",
        "how do i cancel a transfer",
    ],
    "transfer_international": [
        "how do i send money to {city}",
        "can i transfer {amount} abroad",
        "international transfer to {name} in {city}",
        "do you support transfers to other countries",
    ],
    "balance": [
        "what is my balance",
        "how much money is in my {account} account",
        "show me the balance of the {account} account",
        "check balance",
    ],
    "statement": [
        "where can i download my statement",
        "i need a statement for {month}",
        "send me the {account} account statement",
        "how do i get last month's statement",
    ],
    "direct_debit": [
        "set up a direct debit for {merchant}",
        "a direct debit to {merchant} was taken twice",
        "how do i cancel a direct debit",
        "direct debit of {amount} i don't recognise",
    ],
    "refund_pending": [
        "my refund from {merchant} hasn't arrived",
        "when will the refund of {amount} show up",
        "{merchant} says they refunded me but i see nothing",
        "refund still pending",
    ],
    "charge_disputed": [
        "i don't recognise a charge of {amount} from {merchant}",
        "there's a payment i never made",
        "dispute a transaction on my {card}",
        "unknown charge on {day}",
    ],
    "charged_twice": [
        "i was charged twice at {merchant}",
        "the same payment of {amount} appears two times",
        "double charge on my {card}",
        "duplicate transaction from {merchant}",
    ],
    "cash_withdrawal_failed": [
        "the atm didn't give me my cash but took {amount}",
        "withdrawal failed but money left my account",
        "atm in {city} kept my cash",
        "tried to withdraw {amount} and got nothing",
    ],
    "cash_withdrawal_fee": [
        "why was i charged for taking cash out",
        "fee for atm withdrawal in {city}",
        "how much does it cost to withdraw {amount}",
        "atm charges on my {card}",
    ],
    "exchange_rate": [
        "what exchange rate do you use",
        "the rate for my payment in {city} was bad",
        "how much is {amount} in euros",
        "exchange rate for dollars today",
    ],
    "currency_exchange": [
        "can i exchange {amount} to another currency",
        "how do i convert money in the app",
        "i want to hold pounds and euros",
        "exchange currencies before my trip to {city}",
    ],
    "top_up_failed": [
        "my top up of {amount} failed",
        "adding money with my {card} doesn't work",
        "top up declined",
        "why can't i top up my account",
    ],
    "top_up_methods": [
        "how can i add money to my account",
        "can i top up with cash",
        "what ways are there to top up",
        "top up using a bank transfer",
    ],
    "account_open": [
        "i want to open a {account} account",
        "how do i open a new account",
        "open a joint account with {name}",
        "can a student open an account",
    ],
    "account_close": [
        "please close my {account} account",
        "i want to close my account and leave",
        "how do i delete my account",
        "terminate my account with you",
    ],
    "verify_identity": [
        "why do i need to verify my identity",
        "my id verification keeps failing",
        "what documents do you need to verify me",
        "identity check is stuck",
    ],
    "change_address": [
        "i moved to {city}, how do i update my address",
        "change my home address",
        "update the address on my account",
        "new address after moving house",
    ],
    "change_phone": [
        "i have a new phone number",
        "update my mobile number",
        "how do i change the phone number on my account",
        "my number changed, please update it",
    ],
    "password_reset": [
        "i forgot my password",
        "reset my login password",
        "can't log in, need a new password",
        "password reset link doesn't arrive",
    ],
    "app_not_working": [
        "the app keeps crashing",
        "app won't open on my phone",
        "the app is not loading since {day}",
        "error message every time i open the app",
    ],
    "loan_apply": [
        "i want to apply for a loan of {amount}",
        "can i borrow {amount} for a car",
        "how do i get a personal loan",
        "apply for a loan",
    ],
    "loan_rate": [
        "what interest rate is on your loans",
        "how much interest would i pay on {amount}",
        "loan apr please",
        "is the loan rate fixed",
    ],
    "mortgage": [
        "i'd like information about a mortgage",
        "can i get a mortgage for a flat in {city}",
        "mortgage rates for first time buyers",
        "how much can i borrow for a house",
    ],
    "savings_interest": [
        "what interest does the savings account pay",
        "how much will i earn on {amount} in savings",
        "savings rate this {month}",
        "is interest paid monthly on savings",
    ],
    "overdraft": [
        "can i get an overdraft",
        "how much does the overdraft cost",
        "i'm overdrawn by {amount}",
        "increase my overdraft",
    ],
    "contactless": [
        "contactless isn't working on my {card}",
        "what is the contactless limit",
        "tap to pay doesn't work at {merchant}",
        "turn on contactless payments",
    ],
    "virtual_card": [
        "how do i get a virtual card",
        "can i use a virtual card at {merchant}",
        "create a disposable virtual card",
        "virtual card for online shopping",
    ],
    "complaint": [
        "i want to make a complaint",
        "your service has been terrible",
        "who do i complain to about {name}",
        "file a formal complaint",
    ],
}
SLOTS = {
    "card": ["card", "debit card", "credit card", "visa", "mastercard", "new card"],
    "city": ["london", "paris", "berlin", "madrid", "lisbon", "dublin", "new york", "tokyo"],
    "merchant": ["amazon", "tesco", "uber", "netflix", "spotify", "ikea", "the supermarket"],
    "amount": ["$20", "$150", "£75", "€300", "100 euros", "50 pounds", "$1,200", "£9.99"],
    "name": ["my landlord", "my sister", "john", "maria", "a friend", "my employer"],
    "day": ["monday", "tuesday", "friday", "the weekend", "yesterday", "last week"],
    "month": ["january", "march", "june", "october", "december"],
    "account": ["savings", "current", "checking", "business", "joint"],
}
OPENERS = ["", "", "", "hi, ", "hello ", "hey, ", "good morning, ", "excuse me, "]
CLOSERS = ["", "", "", "?", ".", " please", " thanks", " asap", "!", ", can you help?"]
NEIGHBOURS = "qwertyuiopasdfghjklzxcvbnm"


def _typo(text: str, rng: random.Random) -> str:
    """One keyboard slip: a swapped, dropped or replaced letter."""
    positions = [i for i, c in enumerate(text) if c.isalpha()]
    if len(positions) < 4:
        return text
    i = rng.choice(positions[1:-1])
    kind = rng.randrange(3)
    if kind == 0:
        return text[: i - 1] + text[i] + text[i - 1] + text[i + 1 :]
    if kind == 1:
        return text[:i] + text[i + 1 :]
    return text[:i] + rng.choice(NEIGHBOURS) + text[i + 1 :]


def generate_intents(n: int = 20000, seed: int = 0, noise: float = 0.02) -> list[dict[str, str]]:
    """`n` rows of `utterance` and `intent`, classes balanced, `noise` share of labels wrong."""
    rng = random.Random(seed)
    labels = sorted(INTENTS)
    rows, seen = [], set()
    attempts = 0
    while len(rows) < n and attempts < n * 20:
        attempts += 1
        intent = labels[len(rows) % len(labels)]
        text = rng.choice(INTENTS[intent])
        for slot, values in SLOTS.items():
            while "{" + slot + "}" in text:
                text = text.replace("{" + slot + "}", rng.choice(values), 1)
        text = rng.choice(OPENERS) + text + rng.choice(CLOSERS)
        if rng.random() < 0.3:
            text = _typo(text, rng)
        if rng.random() < 0.2:
            text = text.capitalize()
        if text in seen:
            continue
        seen.add(text)
        label = rng.choice(labels) if rng.random() < noise else intent
        rows.append({"utterance": text, "intent": label})
    return rows
