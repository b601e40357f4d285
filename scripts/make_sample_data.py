#!/usr/bin/env python3
"""Generate the synthetic text sample data shipped in ``sample_data/``.

Outputs (overwritten on every run, byte-for-byte reproducible):

* ``sample_data/reviews.csv``  -- 300 made-up product reviews in several languages
  (columns ``review_id, product, stars, lang, text``), for chat/labeling jobs.
* ``sample_data/corpus.jsonl`` -- 3000 short multilingual documents
  (fields ``doc_id, lang, title, text``), for embedding jobs.

Everything is composed from the hand-written phrase banks below with a fixed
random seed; no external data, network access or third-party packages are needed
(standard library only).  Regenerate with::

    python scripts/make_sample_data.py            # writes both files
    python scripts/make_sample_data.py --check    # regenerate in memory, compare with files on disk

Deliberately "broken" corpus rows (to exercise skip logic in the embedding job):

* ``text == ""`` (empty string): doc_ids ``d0421``, ``d1337`` and ``d2718``
* ``text == null`` (JSON null):  doc_id ``d1890``

(see ``EMPTY_TEXT_IDS`` / ``NULL_TEXT_IDS``).  All reviews and all other corpus
rows are non-empty and unique.
"""

# ruff: noqa: E501  (phrase banks: long natural-language string literals)

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "sample_data"

REVIEWS_SEED = 20240501
CORPUS_SEED = 20240502

N_REVIEWS = 300
# Reviews per language (sum == N_REVIEWS): mostly English, ~20% Chinese.
REVIEW_LANG_COUNTS = {"en": 165, "zh": 60, "es": 21, "de": 18, "fr": 18, "ja": 18}
# Star distribution of real shops is J-shaped: many 5s, quite a few 1s.
STAR_WEIGHTS = {5: 0.37, 4: 0.23, 3: 0.14, 2: 0.10, 1: 0.16}

N_DOCS = 3000
CORPUS_LANG_COUNTS = {"en": 1750, "zh": 450, "es": 280, "fr": 270, "de": 250}
EMPTY_TEXT_IDS = ("d0421", "d1337", "d2718")  # text is "" (empty string)
NULL_TEXT_IDS = ("d1890",)  # text is null


# ---------------------------------------------------------------------------
# Reviews: products
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Product:
    name: str  # English name, used in the `product` column
    cat: str
    plural: bool  # English grammar: "these earbuds ... them" vs "this kettle ... it"
    zh: str
    ja: str = ""


PRODUCTS: list[Product] = [
    Product("wireless earbuds", "audio", True, "无线耳机", "ワイヤレスイヤホン"),
    Product("over-ear headphones", "audio", True, "头戴式耳机", "ヘッドホン"),
    Product("noise-cancelling headphones", "audio", True, "降噪耳机", "ノイズキャンセリングヘッドホン"),
    Product("smartwatch", "wearable", False, "智能手表"),
    Product("fitness tracker", "wearable", False, "运动手环"),
    Product("GPS running watch", "wearable", False, "跑步手表"),
    Product("power bank", "charging", False, "充电宝"),
    Product("USB-C charger", "charging", False, "快充充电器"),
    Product("wireless charging pad", "charging", False, "无线充电板"),
    Product("coffee grinder", "kitchen", False, "磨豆机", "コーヒーグラインダー"),
    Product("blender", "kitchen", False, "搅拌机", "ミキサー"),
    Product("air fryer", "kitchen", False, "空气炸锅", "ノンフライヤー"),
    Product("electric kettle", "kitchen", False, "电热水壶", "電気ケトル"),
    Product("frying pan", "cookware", False, "平底锅"),
    Product("cast iron skillet", "cookware", False, "铸铁锅"),
    Product("saucepan set", "cookware", False, "锅具套装"),
    Product("hiking boots", "footwear", True, "登山鞋", "登山靴"),
    Product("trail running shoes", "footwear", True, "越野跑鞋", "トレイルランニングシューズ"),
    Product("winter boots", "footwear", True, "雪地靴", "スノーブーツ"),
    Product("fleece jacket", "clothing", False, "抓绒外套", "フリースジャケット"),
    Product("down jacket", "clothing", False, "羽绒服", "ダウンジャケット"),
    Product("wool socks", "clothing", True, "羊毛袜", "ウールソックス"),
    Product("hiking backpack", "bags", False, "登山包"),
    Product("laptop backpack", "bags", False, "电脑双肩包"),
    Product("travel duffel bag", "bags", False, "旅行包"),
    Product("office chair", "furniture", False, "办公椅", "オフィスチェア"),
    Product("standing desk", "furniture", False, "升降桌", "スタンディングデスク"),
    Product("bookshelf", "furniture", False, "书架", "本棚"),
    Product("insulated water bottle", "drinkware", False, "保温杯", "保温ボトル"),
    Product("travel mug", "drinkware", False, "随行杯", "タンブラー"),
    Product("thermos flask", "drinkware", False, "保温壶", "魔法瓶"),
]

ALL_CATS = (
    "audio",
    "wearable",
    "charging",
    "kitchen",
    "cookware",
    "footwear",
    "clothing",
    "bags",
    "furniture",
    "drinkware",
)
SMALL_CATS = ("audio", "kitchen", "footwear", "clothing", "furniture", "drinkware")
# things that are set up / assembled and come with a manual
GADGET_CATS = ("audio", "wearable", "charging", "kitchen", "furniture")
LANG_CATS = {
    "en": ALL_CATS,
    "zh": ALL_CATS,
    "es": SMALL_CATS,
    "de": SMALL_CATS,
    "fr": SMALL_CATS,
    "ja": SMALL_CATS,
}


# ---------------------------------------------------------------------------
# Reviews: phrase banks
# ---------------------------------------------------------------------------
# Placeholders (English): {p} product, {this} this/these, {obj} it/them, {subj}/{Subj} it/they,
# {be} is/are, {have} has/have, {looks} looks/look, {old} one/pair, {dur} duration, {rel} relative,
# {usage} typical use.  zh / ja: {p} localized product name, {dur}, {rel}.  es / de / fr: {dur}, {rel}.
#
# A leading "tag1,tag2|" marks what a sentence talks about: within one review no two sentences
# may share a tag, so a 3-star review never says "the sound is great" and "the sound is tinny".
# "but" / "plus" are connectors (prefix, lowercase-the-next-letter) used to glue a contrasting
# sentence into an otherwise positive / negative review.

EN = {
    "sep": " ",
    "open_pos": [
        "Really happy with {this} {p}.",
        "Exactly what I was looking for.",
        "price|{Subj} {be} honestly better than I expected for the price.",
        "Solid purchase.",
        "price|Great value for money.",
        "Pleasantly surprised.",
        "I did a lot of research before buying and I'm glad I went with {this}.",
        "durable|I use {obj} every single day and {subj} {have} held up great.",
        "Very impressed so far.",
        "These days I'm skeptical of online reviews, but this one lives up to the hype.",
        "Would buy again without thinking twice.",
        "build,price|Good quality at a fair price, which is rarer than it should be.",
    ],
    "open_5": [
        "Five stars, no hesitation.",
        "Best purchase I've made this year.",
        "Flawless so far.",
        "I'm genuinely impressed.",
        "Honestly one of the best things I've bought in a long time.",
    ],
    "open_neg": [
        "Really disappointed with {this} {p}.",
        "price|Save your money.",
        "I wanted to like {obj}, I really did.",
        "price|Not worth the price.",
        "Returned {obj} after a week.",
        "price|This was a waste of money.",
        "I don't usually write reviews, but I have to warn people about this one.",
        "build|Cheaply made and it shows.",
        "Avoid.",
        "Big letdown.",
        "Not what I expected at all.",
    ],
    "open_mix": [
        "Mixed feelings about {this} {p}.",
        "{Subj} {be} okay, but not great.",
        "Decent, with a few annoying flaws.",
        "price|Fine for the price, I guess.",
        "Some things I love, some things I really don't.",
        "Three stars feels about right.",
        "Not bad, not amazing.",
        "Does the job, mostly.",
        "Hard to rate this one.",
    ],
    "context": [
        "I've been using {obj} for {dur} now.",
        "My {rel} has the same model, which is why I bought {obj}.",
        "I ordered {obj} after my old {old} finally gave up.",
        "For context, I use {obj} mostly {usage}.",
        "We've had {obj} for {dur}.",
        "I've owned {obj} for {dur} and use {obj} {usage}.",
        "price|Got {obj} on sale.",
        "Bought {obj} after reading a bunch of reviews here.",
        "My {rel} recommended {obj} to me.",
    ],
    "dur": [
        "two weeks",
        "about a month",
        "three months",
        "six months",
        "almost a year",
        "over a year",
        "ten days",
        "a couple of months",
    ],
    "rel": [
        "dad",
        "mom",
        "sister",
        "brother",
        "husband",
        "wife",
        "partner",
        "roommate",
        "son",
        "daughter",
        "best friend",
    ],
    "generic_pos": [
        "ship,pack|Shipping was fast and everything arrived well packed.",
        "ship|It arrived two days earlier than promised.",
        "pack|The packaging is minimal and mostly recyclable, which I appreciate.",
        "looks|The design looks more expensive than it actually is.",
        "service|Customer support answered my question within an hour.",
        "price|For the price, I honestly can't complain.",
        "looks|The color is exactly like in the photos.",
        "build|Build quality feels solid; nothing creaks or rattles.",
        "durable|I get the feeling {subj} will last for years.",
    ],
    # only for things that need setting up / assembling (GADGET_CATS)
    "generic_pos_gadget": [
        "manual|Setup took about five minutes, no manual needed.",
        "pack|The box even included a few spare parts, which was a nice touch.",
    ],
    # only used in 4-5 star reviews (too enthusiastic for a mixed one)
    "generic_pos_strong": [
        'My {rel} called {obj} "the best thing you\'ve bought all year" and I have to agree.',
        "My {rel} liked {obj} so much that I ordered another {old}.",
    ],
    "generic_neg": [
        "pack,looks|The box arrived crushed and there was a scratch right on the front.",
        "service|Customer service kept sending me the same copy-pasted answer.",
        'build|The listing says "premium quality". It is not.',
        # (gadget-only negatives are in generic_neg_gadget)
        "ship|It took almost three weeks to arrive.",
        "price|Way overpriced for what you get.",
        "smell|There was a strong chemical smell when I opened the box, and it took days to go away.",
        "looks|Looks nothing like the photos; the color is much duller in real life.",
        "build|Quality control seems to be non-existent.",
        "service|I contacted support twice and never heard back.",
        'service,durable|The so-called "lifetime warranty" turned out to cover almost nothing.',
    ],
    "generic_neg_gadget": ["manual|The instructions are a single page of tiny, badly translated text."],
    "minor_neg_gadget": ["manual|The manual could be clearer."],
    "minor_neg": [
        "pack|The packaging was a bit excessive.",
        "ship|It took a few extra days to ship.",
        "looks|I wish {subj} came in more colors.",
        "price|A bit pricey, but you get what you pay for.",
        "looks|The logo is a little bigger than I'd like.",
    ],
    "close_pos": [
        "Highly recommend.",
        "Would definitely buy again.",
        "Recommended!",
        "price|Worth every penny.",
        "If you're on the fence, just get {obj}.",
        "I'm already thinking about buying another one as a gift.",
        "Very happy customer here.",
    ],
    "close_neg": [
        "I would not recommend {obj}.",
        "Going back tomorrow.",
        "Look elsewhere.",
        "Requested a refund.",
        "Very disappointed.",
        "Lesson learned.",
        "Spend a little more and get something that actually works.",
    ],
    "close_mix": [
        "Might work for you if you're not too picky.",
        "price|Okay if you catch {obj} on sale.",
        "I'm keeping {obj}, but I probably wouldn't buy {obj} again.",
        "price|Worth it at a discount, not at full price.",
        "Decent overall, but there are better options out there.",
    ],
    "short": {
        5: [
            "Love {obj}!",
            "Perfect. No complaints.",
            "Exactly as described, works great.",
            "Great quality, fast delivery.",
            "10/10 would buy again",
            "Absolutely love {obj}, thank you!",
        ],
        4: [
            "Very good, just a few small things could be better.",
            "Good product, would recommend.",
            "Works well. Not perfect but close.",
            "pretty good overall",
        ],
        3: ["It's okay.", "Average. Does the job.", "Fine, nothing special.", "meh, it's alright"],
        2: [
            "Not great. Broke sooner than expected.",
            "Meh. Expected more for the price.",
            "Disappointing, to be honest.",
        ],
        1: [
            "Stopped working after two days.",
            "Terrible. Returned.",
            "Don't buy.",
            "Arrived broken. Never again.",
        ],
    },
    "update_pos": [
        "UPDATE after {dur}: still holding up perfectly.",
        "Edit: {dur} later and I still use {obj} every day.",
        "Update: still going strong after {dur}.",
    ],
    "update_neg": [
        "UPDATE: after {dur} {subj} {be} basically falling apart. Dropping my rating.",
        "Edit: the replacement had the same problem after {dur}.",
        "Update after {dur}: it got worse. Avoid.",
    ],
    "update_mix": [
        "Update after {dur}: no new problems, but no improvements either.",
        "Edit: after {dur} I've mostly gotten used to the quirks.",
    ],
    "but": [("That said, ", True), ("On the downside, ", True), ("Unfortunately, ", True)],
    "plus": [("On the plus side, ", True), ("To be fair, ", True), ("The one good thing: ", True)],
    "emoji_pos": ["👍", "😍", "🔥", "💯", "🙌", "⭐⭐⭐⭐⭐"],
    "emoji_neg": ["😡", "👎", "🙄", "😤", "💸"],
    "emoji_mix": ["🤷", "😐", "🤔"],
    "cat_pos": {
        "audio": [
            "sound|The sound is clear and well balanced, with more bass than I expected.",
            "battery|Battery easily lasts a full workday and then some.",
            "conn|Pairing with my phone took seconds, and reconnecting is automatic.",
            "comfort|Comfortable enough to wear for hours without any ear fatigue.",
            "mic|Calls sound good too; people on the other end say I'm easy to hear.",
            "nc|Noise cancellation is impressive; the train ride is suddenly quiet.",
        ],
        "wearable": [
            "battery|Battery lasts almost a week with the always-on display turned off.",
            "accuracy|Step and heart rate tracking seem accurate compared to my chest strap.",
            "screen|The screen is bright and easy to read even in direct sunlight.",
            "app|The companion app is clean and syncs without any fuss.",
            "comfort|Light enough that I forget I'm wearing it, even while sleeping.",
        ],
        "charging": [
            "speed|Charges my phone from almost empty to full in about an hour.",
            "heat|Stays cool even when charging two devices at once.",
            "size|Compact enough to fit in a jacket pocket.",
            "compat|Works with my phone, my tablet and my partner's laptop without any issues.",
            "led|The little LED indicator is handy and not too bright at night.",
        ],
        "kitchen": [
            "noise|Quieter than my old one, which my family appreciates at 6 a.m.",
            "clean|Very easy to clean; most parts go straight into the dishwasher.",
            "controls|The controls are simple and intuitive, no app required.",
            "build,size|Feels sturdy, and it fits nicely on the counter without taking up too much space.",
            "perf|It does its job fast and consistently, every single time.",
        ],
        "cookware": [
            "heat|Heats evenly, with no hot spots in the middle.",
            "stick|Eggs slide right off with just a little butter.",
            "handle|The handle stays cool enough to touch on the stovetop.",
            "induction|Works perfectly on our induction hob.",
            "durable|Heavy in a good way; it feels like it will last for decades.",
        ],
        "footwear": [
            "size,comfort|True to size and comfortable right out of the box, no break-in needed.",
            "grip|The grip on wet rocks is excellent.",
            "water|My feet stayed dry through a full day of rain.",
            "size|Plenty of room in the toe box, even with thick socks.",
            "durable|After 300 km the soles still look almost new.",
        ],
        "clothing": [
            "warm|Really warm without being bulky.",
            "fabric|The fabric is soft and not itchy at all.",
            "wash|Still {looks} new after a dozen washes.",
            "size|I ordered my usual size and the fit is spot on.",
            "breathe|Breathes well, so I don't overheat on the bus.",
        ],
        "bags": [
            "pockets|Lots of pockets, and they're actually in useful places.",
            "straps|The straps are well padded, so even a heavy load feels comfortable.",
            "size|Fits a 15-inch laptop plus chargers with room to spare.",
            "zip|The zippers are sturdy and run smoothly.",
            "water|Survived a sudden downpour and everything inside stayed dry.",
        ],
        "furniture": [
            "assembly,manual|Assembly took about thirty minutes and all the parts were clearly labeled.",
            "build|Very sturdy; no wobbling at all.",
            "looks|Looks great in my home office.",
            "parts|All the screws and tools were included, plus a few spares.",
            "looks,surface|The finish looks better in person than online.",
        ],
        "drinkware": [
            "hot|Keeps coffee hot for hours; it's still warm at lunchtime.",
            "cold|Ice was still there the next morning.",
            "leak|The lid seals completely, no leaks even in my bag.",
            "clean,taste|Easy to clean, and it doesn't hold on to smells.",
            "size|Fits in my car's cup holder, which my last one didn't.",
        ],
    },
    "cat_neg": {
        "audio": [
            "conn|The left side keeps cutting out every few minutes.",
            "battery|Battery life is nowhere near what's advertised, maybe three hours at best.",
            "sound|The sound is tinny and the bass basically doesn't exist.",
            "conn|The Bluetooth connection drops whenever my phone is in my back pocket.",
            "comfort|After an hour the pressure on my ears gets uncomfortable.",
            "nc|Noise cancellation is weak; I can still hear every conversation on the train.",
            "mic|On calls, people constantly tell me I sound like I'm in a tunnel.",
        ],
        "wearable": [
            "app|The app crashes constantly and syncing only works about half the time.",
            "accuracy|Heart rate readings jump around wildly during workouts.",
            "comfort|The strap gave me a rash after a few days.",
            "battery|I have to charge it every night, which defeats the purpose of sleep tracking.",
            "accuracy|GPS takes forever to lock on, and the tracked routes are all over the place.",
            "screen|The screen is almost unreadable outdoors.",
        ],
        "charging": [
            "heat|Gets uncomfortably hot after twenty minutes of charging.",
            "speed|Charging is painfully slow, slower than the cheap brick that came with my phone.",
            "compat,durable|Stopped charging my laptop entirely after a few weeks.",
            "conn|The connection is loose, so charging keeps starting and stopping.",
            "noise|It makes a high-pitched whine that I can hear across the room at night.",
        ],
        "kitchen": [
            "noise|Unbelievably loud, like a small jet engine in the kitchen.",
            "clean|Cleaning it is a nightmare because of all the little corners.",
            "smell|The plastic smell never fully went away.",
            "controls,durable|One of the buttons stopped responding after a month.",
            "cord|The cord is ridiculously short, so it only works right next to the outlet.",
        ],
        "cookware": [
            "stick,durable|The coating started flaking after a few weeks of careful use.",
            "heat,durable|The bottom warped the first time I used it on high heat.",
            "stick|Food sticks no matter how much oil I use.",
            "handle|The handle gets dangerously hot.",
            "durable|Rust spots appeared even though I dried it right after washing.",
        ],
        "footwear": [
            "size|They run at least a full size small.",
            "comfort|Gave me blisters on both heels within the first hour.",
            "durable|The sole started to separate after only a couple of months.",
            'water|Not waterproof at all, despite the big "100% waterproof" tag.',
            "laces|The laces are way too short and keep coming undone.",
        ],
        "clothing": [
            "wash,size|Shrank a full size after the first wash, even on cold.",
            "wash,fabric|Started pilling after just two wears.",
            "warm,looks|Much thinner than {subj} {looks} in the photos.",
            "durable|The stitching came loose within a month.",
            "fabric|Scratchy enough that I can't wear {obj} on bare skin.",
        ],
        "bags": [
            "zip|One of the zippers broke on the second trip.",
            "straps|The shoulder straps dig in after twenty minutes.",
            "durable|The fabric already has a hole near the bottom seam.",
            "size|Much smaller inside than the photos suggest.",
            "pockets|The side pocket is too shallow to hold a water bottle securely.",
        ],
        "furniture": [
            "parts,build|Two screws were missing and one panel had a crack.",
            "build|It wobbles no matter how much I tighten everything.",
            "manual,assembly|The instructions were useless; I had to watch a video to figure it out.",
            "surface|The surface scratches if you so much as look at it.",
            "build,noise|It started creaking loudly after a couple of weeks.",
        ],
        "drinkware": [
            "leak|Leaks every time it tips over, so it can't go in a bag.",
            "hot|Coffee is lukewarm after an hour.",
            "looks,durable|The paint started chipping within a week.",
            "taste|It has a metallic taste that won't go away.",
            "clean|The lid is hard to clean, and mold keeps growing in the gasket.",
        ],
    },
    "usage": {
        "audio": ["on my commute", "at the gym", "for video calls at work", "while running"],
        "wearable": ["for running", "for sleep tracking", "at the gym", "for notifications"],
        "charging": ["when traveling", "on my nightstand", "at the office", "on long trips"],
        "kitchen": ["every morning", "a few times a week", "for meal prep on Sundays", "daily"],
        "cookware": ["almost every day", "mostly for breakfast", "for weeknight dinners"],
        "footwear": ["on weekend hikes", "for my daily walks", "on muddy trails"],
        "clothing": ["on cold mornings", "for winter camping", "pretty much every day"],
        "bags": ["for work", "on weekend trips", "for air travel"],
        "furniture": ["in my home office", "in the living room", "every workday"],
        "drinkware": ["on my commute", "at the office", "on hikes"],
    },
    # short noun phrases for the "Pros: ... / Cons: ..." review format (same index = same aspect)
    "pros": {
        "audio": ["great sound", "long battery life", "quick pairing", "comfortable fit", "good mic"],
        "wearable": ["accurate tracking", "bright screen", "week-long battery", "light and comfy"],
        "charging": ["fast charging", "compact", "stays cool", "works with everything"],
        "kitchen": ["easy to clean", "fairly quiet", "simple controls", "small footprint"],
        "cookware": ["even heating", "nonstick works", "induction compatible", "solid handle"],
        "footwear": ["true to size", "great grip", "waterproof", "no break-in needed"],
        "clothing": ["warm", "soft fabric", "washes well", "good fit"],
        "bags": ["lots of pockets", "padded straps", "sturdy zippers", "fits a laptop"],
        "furniture": ["easy assembly", "sturdy", "looks nice", "all parts included"],
        "drinkware": ["keeps drinks hot", "no leaks", "easy to clean", "fits cup holders"],
    },
    "cons": {
        "audio": [
            "muddy bass",
            "bulky case",
            "touch controls too sensitive",
            "clamps a bit tight",
            "mediocre mic",
        ],
        "wearable": ["slow GPS", "notifications lag", "clunky app", "strap feels cheap"],
        "charging": ["short cable", "no power indicator", "gets warm", "bright LED"],
        "kitchen": ["hard to clean corners", "loud", "short cord", "flimsy lid"],
        "cookware": ["heavy", "stains easily", "not dishwasher safe", "handle gets hot"],
        "footwear": ["runs small", "slippery on ice", "laces too short", "stiff at first"],
        "clothing": ["thinner than expected", "a bit itchy", "pills quickly", "runs large"],
        "bags": ["no water bottle pocket", "thin shoulder straps", "zippers stick", "heavy when empty"],
        "furniture": ["vague instructions", "slight wobble", "scratches easily", "missing screw"],
        "drinkware": [
            "lukewarm by the afternoon",
            "lid drips a little",
            "lid hard to clean",
            "too tall for some cup holders",
            "paint chips",
        ],
    },
}

ZH = {
    "sep": "",
    "open_pos": [
        "非常满意的一次购物。",
        "东西收到了，比想象中好很多。",
        "price|性价比超高，强烈推荐！",
        "用了一段时间才来评价，确实不错。",
        "build|第二次回购了，质量一如既往地好。",
        "朋友推荐买的，果然没让我失望。",
        "price|这个价位能买到这样的{p}，真的很值。",
        "build|做工精细，细节处理得很好。",
        "犹豫了很久才下单，现在觉得买对了。",
    ],
    "open_5": ["完美！挑不出毛病。", "今年买过最满意的东西之一。", "太喜欢了，必须给满分！"],
    "open_neg": [
        "非常失望。",
        "买了就后悔，千万别买。",
        "跟宣传的完全不一样。",
        "build,price|质量太差了，根本不值这个价。",
        "第一次给差评，实在忍不了了。",
        "收到货就发现问题了。",
        "这是我买过最差的{p}。",
    ],
    "open_mix": [
        "整体还行吧，有好有坏。",
        "中规中矩，没有惊喜也没有太失望。",
        "price|一分钱一分货，这个价格也就这样了。",
        "有优点也有缺点，说说我的感受。",
        "凑合能用。",
    ],
    "context": [
        "用了{dur}了，来说说感受。",
        "{rel}推荐我买的。",
        "之前用的那个坏了，就换了这个。",
        "趁着活动买的。",
        "看了很多评价才下单的。",
        "{rel}用过一个{p}说不错，我也跟着买了。",
    ],
    "dur": ["一周", "半个月", "一个月", "两个月", "三个月", "半年", "一年多"],
    "rel": ["爸爸", "妈妈", "老婆", "老公", "男朋友", "女朋友", "同事", "孩子", "室友"],
    "generic_pos": [
        "ship|物流很快，隔天就到了。",
        "pack|包装很严实，没有任何磕碰。",
        "service|客服态度很好，问什么都耐心解答。",
        "looks|颜值很高，放在家里很好看。",
        "build,smell|做工扎实，没有异味。",
        "price|价格实惠，比实体店便宜不少。",
        "家里人都说好用。",
    ],
    "generic_pos_strong": ["{rel}用了也说好，准备再买一个。"],
    "generic_pos_gadget": ["manual|说明书写得很清楚，一看就会。"],
    "minor_neg_gadget": ["manual|说明书只有英文，不太方便。"],
    "generic_neg": [
        "ship|物流太慢了，等了快两个星期。",
        "pack,looks|包装盒都压扁了，里面还有划痕。",
        "service|客服一直敷衍，问题到现在都没解决。",
        "smell|有很大的塑料味，放了好几天都散不掉。",
        "build|做工粗糙，边缘还有毛刺。",
        "looks|实物和图片差别太大了。",
        'build,price|所谓的"旗舰款"，用起来跟几十块钱的没区别。',
    ],
    "generic_neg_strong": [
        "service|申请退货，商家一直拖着不处理。",
        "service|详情页写着“七天无理由退换”，结果客服说不支持。",
    ],
    "minor_neg": [
        "pack|就是包装有点简陋。",
        "looks|唯一的缺点是颜色选择太少。",
        "ship|发货稍微慢了一点。",
        "price|价格稍微有点贵。",
    ],
    "close_pos": ["推荐购买！", "会回购的。", "值得入手。", "好评！", "已经推荐给朋友了。", "满意！"],
    "close_neg": ["不推荐。", "大家慎重购买。", "已申请退款。", "再也不会在这家买了。", "差评。"],
    "close_mix": ["要求不高的话可以考虑。", "price|有活动的时候买还行。", "凑合用吧。", "总体来说一般般。"],
    "short": {
        5: ["很好用，好评！", "质量很好，物流也快，满意。", "非常棒，超出预期！", "完美"],
        4: ["还不错，挺满意的。", "整体不错，就是价格稍贵。", "挺好的，推荐。"],
        3: ["一般般吧。", "还行，能用。", "没什么特别的。"],
        2: ["不太好用，有点失望。", "质量一般，不值这个价。"],
        1: ["垃圾，别买。", "用了两天就坏了。", "收到就是坏的，退货！"],
    },
    "update_pos": ["追评：用了{dur}了，依然很好用。", "追评：{dur}过去了，没有任何问题。"],
    "update_neg": ["追评：用了{dur}就坏了，联系客服也没人理。", "追评：{dur}后问题越来越严重，后悔买了。"],
    "update_mix": ["追评：用了{dur}，没出什么新问题，但也谈不上好用。"],
    "but": [("不过，", False), ("美中不足的是，", False), ("可惜的是，", False)],
    "plus": [("好在", False), ("好的一点是，", False), ("说句公道话，", False)],
    "emoji_pos": ["👍", "👍👍", "😊", "❤️", "🎉"],
    "emoji_neg": ["😡", "👎", "😞"],
    "emoji_mix": ["😐", "🤔"],
    "cat_pos": {
        "audio": [
            "sound|音质很好，低音很足。",
            "battery|续航很给力，充一次电能用好几天。",
            "comfort|佩戴很舒服，戴久了耳朵也不疼。",
            "nc|降噪效果明显，地铁上也很安静。",
        ],
        "wearable": [
            "screen|屏幕清晰，太阳底下也看得清。",
            "accuracy|心率和步数都挺准的。",
            "battery|续航大概一周，很省心。",
        ],
        "charging": [
            "speed|充电速度很快，一个小时就充满了。",
            "size|体积小巧，放口袋里刚刚好。",
            "heat|充电的时候基本不发热。",
        ],
        "kitchen": [
            "noise|声音不大，早上用也不会吵醒家人。",
            "clean|清洗很方便，几分钟就搞定。",
            "controls|操作简单，老人也会用。",
        ],
        "cookware": [
            "stick,heat|受热均匀，煎蛋一点都不粘。",
            "induction|电磁炉和燃气灶都能用。",
            "handle|手柄不烫手，用起来很安心。",
        ],
        "footwear": [
            "size,comfort|尺码标准，穿着很舒服，不磨脚。",
            "grip|鞋底防滑，下雨天走路也很稳。",
            "durable|爬了好几次山了，鞋子还跟新的一样。",
        ],
        "clothing": [
            "warm|很保暖，而且一点都不臃肿。",
            "fabric|面料柔软，不扎皮肤。",
            "wash|洗了好几次也没有变形起球。",
        ],
        "bags": [
            "pockets|口袋很多，收纳很方便。",
            "straps|背带很宽，背久了肩膀也不累。",
            "zip|拉链顺滑，做工很结实。",
        ],
        "furniture": [
            "assembly,parts|安装很简单，半个小时就装好了。",
            "build|很稳，一点都不晃。",
            "looks|放在书房里很好看。",
        ],
        "drinkware": [
            "hot|保温效果很好，早上装的热水下午还是烫的。",
            "leak|密封性很好，放包里也不会漏。",
            "clean,taste|容易清洗，也没有异味。",
        ],
    },
    "cat_neg": {
        "audio": [
            "conn|左耳经常断连，非常影响使用。",
            "battery|续航根本没有宣传的那么长。",
            "comfort|戴一会儿耳朵就疼。",
            "mic|通话的时候对方总说听不清。",
        ],
        "wearable": [
            "app|App经常闪退，数据同步不了。",
            "comfort|表带戴久了手腕会过敏。",
            "accuracy|GPS定位很慢，轨迹也不准。",
        ],
        "charging": [
            "heat|充电时发热严重，不敢放在床边。",
            "speed|充电特别慢，还不如原装充电器。",
            "durable|用了不到一个月就充不进电了。",
        ],
        "kitchen": [
            "noise|噪音太大了，像拖拉机一样。",
            "clean|很难清洗，角落里全是残渣。",
            "controls|用了一个月按键就失灵了。",
        ],
        "cookware": [
            "stick|涂层用了几次就开始掉了。",
            "heat|锅底变形了，放在灶上晃来晃去。",
            "stick|很粘锅，放多少油都没用。",
        ],
        "footwear": [
            "size|尺码偏小，建议买大一码。",
            "comfort|穿了一天脚后跟就磨破了。",
            "water|说是防水的，结果一下雨鞋里全湿了。",
        ],
        "clothing": ["wash|洗了一次就缩水了。", "wash|穿了两次就开始起球。", "warm|比图片上看起来薄很多。"],
        "bags": ["zip|拉链第二次用就坏了。", "straps|背带太细，勒得肩膀疼。", "size|容量比描述的小很多。"],
        "furniture": [
            "parts|少了两颗螺丝，还得自己去买。",
            "build|怎么拧都晃，用着很不放心。",
            "surface|表面很容易刮花。",
        ],
        "drinkware": [
            "leak|漏水，包里的东西全湿了。",
            "hot|保温效果很差，一个小时就凉了。",
            "taste|有一股金属味，洗了很多遍都去不掉。",
        ],
    },
    # JD/Taobao-style "field：value" reviews, one field per line
    "struct": {
        "外观": {
            "pos": ["颜值很高，很精致", "简约大方", "跟图片一样好看"],
            "neg": ["跟图片差距很大", "颜色很土，有点失望"],
            "mix": ["一般，不算难看", "还可以，中规中矩"],
        },
        "做工": {
            "pos": ["做工精细，没有瑕疵", "用料扎实，手感很好"],
            "neg": ["做工粗糙，有毛刺", "接缝处已经开胶了"],
            "mix": ["还行，细节一般", "马马虎虎"],
        },
        "性价比": {
            "pos": ["很高，值这个价", "超值"],
            "neg": ["很低，不值这个价", "太贵了"],
            "mix": ["一般，中规中矩", "活动价还可以"],
        },
    },
}

ES = {
    "sep": " ",
    "open_pos": [
        "Muy contento con la compra.",
        "Justo lo que buscaba.",
        "price|Calidad-precio, imposible pedir más.",
        "Me ha sorprendido para bien.",
        "Cumple de sobra con lo que promete.",
        "Estoy encantada.",
    ],
    "open_5": ["¡Un diez!", "De lo mejor que he comprado este año."],
    "open_neg": [
        "Muy decepcionado.",
        "No lo compréis, de verdad.",
        "price|Una pérdida de dinero.",
        "Nada que ver con lo que se anuncia.",
        "Lo devolví a la semana.",
    ],
    "open_mix": [
        "Ni fu ni fa.",
        "Está bien, sin más.",
        "Tiene cosas buenas y cosas malas.",
        "price|Correcto para el precio, pero no esperéis maravillas.",
    ],
    "context": [
        "Lo uso desde hace {dur}.",
        "Me lo recomendó mi {rel}.",
        "Lo pedí porque el anterior se rompió.",
        "price|Lo compré en oferta.",
        "Lo elegí después de leer muchas opiniones.",
    ],
    "dur": ["dos semanas", "un mes", "tres meses", "medio año", "más de un año"],
    "rel": ["madre", "padre", "hermana", "pareja", "hijo", "abuela"],
    "generic_pos": [
        "ship|El envío fue rapidísimo, llegó en dos días.",
        "pack|Venía muy bien embalado.",
        "service|El servicio de atención al cliente respondió enseguida.",
        "looks,price|Parece mucho más caro de lo que es.",
    ],
    "generic_pos_gadget": ["manual|Las instrucciones son claras y fáciles de seguir."],
    "generic_neg": [
        "ship|Tardó casi tres semanas en llegar.",
        "pack|La caja llegó aplastada y con un golpe.",
        'build|Pone "calidad premium" en la caja, pero de premium no tiene nada.',
        "service|El servicio al cliente no contesta los correos.",
        "looks|No se parece en nada a las fotos.",
    ],
    "minor_neg": ["pack|El embalaje es un poco excesivo.", "price|Podría ser algo más barato."],
    "minor_neg_gadget": ["manual|Las instrucciones podrían ser más claras."],
    "close_pos": ["Totalmente recomendable.", "Volvería a comprarlo.", "¡Recomendado!"],
    "close_neg": ["No lo recomiendo.", "Ya he pedido el reembolso.", "Buscad otra opción."],
    "close_mix": ["price|Si lo encontráis de oferta, puede valer la pena.", "Para salir del paso, vale."],
    "short": {
        5: ["¡Perfecto, tal como se describe!", "Me encanta. Calidad excelente."],
        4: ["Muy bien, aunque mejorable en detalles.", "Buena compra."],
        3: ["Normalito.", "Cumple, sin más."],
        2: ["Regular, esperaba más."],
        1: ["Se rompió a los dos días. Fatal.", "Horrible, no lo compréis."],
    },
    "update_pos": ["Actualización tras {dur}: sigue como el primer día."],
    "update_neg": ["Actualización: después de {dur} ya está para tirar. Bajo la puntuación."],
    "update_mix": ["Actualización tras {dur}: todo sigue igual, ni mejor ni peor."],
    "but": [("Eso sí, ", True), ("Como pega, ", True), ("Lo malo: ", True)],
    "plus": [("A su favor, ", True), ("Lo bueno: ", True)],
    "emoji_pos": ["👍", "😍", "👌"],
    "emoji_neg": ["😠", "👎"],
    "emoji_mix": ["🤷‍♀️"],
    "cat_pos": {
        "audio": [
            "sound|El sonido es muy nítido y los graves están bien.",
            "battery|La batería dura muchísimo.",
        ],
        "kitchen": [
            "noise,clean|Es silencioso y muy fácil de limpiar.",
            "perf|Funciona rápido y el resultado es siempre el mismo.",
        ],
        "footwear": [
            "size,comfort|La talla es exacta y son comodísimas desde el primer día.",
            "grip|Agarran muy bien incluso en terreno mojado.",
        ],
        "clothing": ["warm|Abriga muchísimo y no abulta nada.", "fabric|El tejido es suave y no pica."],
        "furniture": [
            "assembly,build|Se monta en media hora y es muy estable.",
            "looks|Queda genial en el salón.",
        ],
        "drinkware": [
            "hot|Mantiene el café caliente durante horas.",
            "leak|No gotea nada, lo llevo en la mochila sin problema.",
        ],
    },
    "cat_neg": {
        "audio": [
            "conn|Se desconectan cada dos por tres.",
            "comfort|Después de una hora me duelen las orejas.",
        ],
        "kitchen": ["noise|Hace un ruido insoportable.", "clean|Limpiarlo es una pesadilla."],
        "footwear": [
            "size|Tallan muy pequeño, pedid una talla más.",
            "comfort|Me hicieron ampollas el primer día.",
        ],
        "clothing": ["wash|Encogió en el primer lavado.", "fabric|Le salen bolitas enseguida."],
        "furniture": [
            "parts|Faltaban dos tornillos.",
            "build|Se tambalea por mucho que apriete los tornillos.",
        ],
        "drinkware": ["leak|Pierde agua por la tapa.", "hot|El café se enfría en una hora."],
    },
}

DE = {
    "sep": " ",
    "open_pos": [
        "Bin rundum zufrieden.",
        "Genau das, was ich gesucht habe.",
        "price|Für den Preis wirklich top.",
        "Hat meine Erwartungen übertroffen.",
        "Klare Kaufempfehlung.",
    ],
    "open_5": ["Besser geht es kaum.", "Eines der besten Produkte, die ich in letzter Zeit gekauft habe."],
    "open_neg": [
        "Leider eine große Enttäuschung.",
        "Finger weg!",
        "price|Rausgeschmissenes Geld.",
        "Hat mit der Beschreibung wenig zu tun.",
        "Ging nach einer Woche zurück.",
    ],
    "open_mix": [
        "Ganz okay, mehr aber auch nicht.",
        "Gemischte Gefühle.",
        "Solide, aber mit ein paar Macken.",
        "price|Für den Preis in Ordnung.",
    ],
    "context": [
        "Ich nutze es jetzt seit {dur}.",
        "Auf Empfehlung von {rel} gekauft.",
        "Habe es als Ersatz für mein altes gekauft.",
        "price|Im Angebot gekauft.",
        "Nach langem Vergleichen habe ich mich für dieses Modell entschieden.",
    ],
    "dur": ["zwei Wochen", "einem Monat", "drei Monaten", "einem halben Jahr", "über einem Jahr"],
    "rel": [
        "meiner Mutter",
        "meinem Vater",
        "meiner Schwester",
        "meinem Bruder",
        "meiner Frau",
        "meinem Mann",
    ],
    "generic_pos": [
        "ship|Die Lieferung kam schneller als angekündigt.",
        "pack|Sehr gut verpackt, alles heil angekommen.",
        "service|Der Kundenservice hat sofort geantwortet.",
        "looks,price|Sieht deutlich hochwertiger aus, als der Preis vermuten lässt.",
    ],
    "generic_pos_gadget": ["manual|Die Anleitung ist verständlich und gut bebildert."],
    "generic_neg": [
        "ship|Die Lieferung hat fast drei Wochen gedauert.",
        "pack|Der Karton war eingedrückt und das Teil hatte einen Kratzer.",
        "build|Auf der Verpackung steht „Premium-Qualität“. Davon merke ich nichts.",
        "service|Der Kundenservice reagiert einfach nicht.",
        "looks|Sieht in echt ganz anders aus als auf den Fotos.",
    ],
    "minor_neg": ["pack|Die Verpackung ist etwas übertrieben.", "price|Etwas teuer ist es schon."],
    "minor_neg_gadget": ["manual|Die Anleitung könnte besser sein."],
    "close_pos": ["Würde ich jederzeit wieder kaufen.", "Absolute Empfehlung!", "Volle Empfehlung."],
    "close_neg": ["Nicht empfehlenswert.", "Geht zurück.", "Lieber etwas anderes kaufen."],
    "close_mix": [
        "price|Im Angebot kann man zuschlagen.",
        "Wer keine großen Ansprüche hat, wird zufrieden sein.",
    ],
    "short": {
        5: ["Super, alles bestens!", "Top Qualität, schnelle Lieferung."],
        4: ["Gut, kleine Abzüge in der B-Note.", "Sehr ordentlich."],
        3: ["Geht so.", "Durchschnitt."],
        2: ["Eher enttäuschend."],
        1: ["Nach zwei Tagen kaputt. Finger weg.", "Schrott."],
    },
    "update_pos": ["Nachtrag nach {dur}: immer noch alles bestens."],
    "update_neg": ["Nachtrag: Nach {dur} ist es schon hinüber. Daher Abzug."],
    "update_mix": ["Nachtrag nach {dur}: keine neuen Probleme, aber auch nicht besser geworden."],
    "but": [("Einziger Kritikpunkt: ", False), ("Negativ: ", False), ("Was mich stört: ", False)],
    "plus": [("Positiv: ", False), ("Immerhin: ", False)],
    "emoji_pos": ["👍", "😊"],
    "emoji_neg": ["👎", "😠"],
    "emoji_mix": ["😐"],
    "cat_pos": {
        "audio": [
            "sound|Der Klang ist klar und ausgewogen, der Bass kommt gut rüber.",
            "battery|Der Akku hält locker einen ganzen Arbeitstag.",
        ],
        "kitchen": [
            "noise,clean|Angenehm leise und schnell gereinigt.",
            "controls|Die Bedienung ist kinderleicht.",
        ],
        "footwear": [
            "size,comfort|Passen perfekt und waren vom ersten Tag an bequem.",
            "grip|Super Grip, auch auf nassen Steinen.",
        ],
        "clothing": [
            "warm|Hält schön warm und trägt nicht auf.",
            "fabric|Der Stoff ist weich und kratzt überhaupt nicht.",
        ],
        "furniture": [
            "assembly,parts|Der Aufbau hat knapp eine halbe Stunde gedauert, alles passte.",
            "build|Steht bombenfest, nichts wackelt.",
        ],
        "drinkware": [
            "hot|Der Kaffee ist auch nach Stunden noch heiß.",
            "leak|Absolut dicht, kann problemlos in die Tasche.",
        ],
    },
    "cat_neg": {
        "audio": [
            "conn|Die Verbindung bricht ständig ab.",
            "comfort|Nach einer Stunde drückt es unangenehm an den Ohren.",
        ],
        "kitchen": [
            "noise|Unglaublich laut.",
            "clean|Die Reinigung ist eine Qual, überall bleiben Reste hängen.",
        ],
        "footwear": [
            "size|Fallen mindestens eine Nummer kleiner aus.",
            "comfort|Nach einer Stunde hatte ich Blasen an beiden Fersen.",
        ],
        "clothing": [
            "wash|Ist nach der ersten Wäsche eingelaufen.",
            "fabric|Bildet schon nach zweimal Tragen Knötchen.",
        ],
        "furniture": ["parts|Es fehlten zwei Schrauben.", "build|Wackelt, egal wie fest man alles anzieht."],
        "drinkware": ["leak|Der Deckel ist undicht.", "hot|Nach einer Stunde ist der Tee nur noch lauwarm."],
    },
}

FR = {
    "sep": " ",
    "open_pos": [
        "Très satisfait de mon achat.",
        "Exactement ce que je cherchais.",
        "price|Excellent rapport qualité-prix.",
        "Agréablement surprise.",
        "Rien à redire.",
    ],
    "open_5": ["Un sans-faute.", "Mon meilleur achat de l'année."],
    "open_neg": [
        "Très déçu.",
        "À fuir.",
        "price|De l'argent jeté par les fenêtres.",
        "Rien à voir avec la description.",
        "Renvoyé au bout d'une semaine.",
    ],
    "open_mix": [
        "Correct, sans plus.",
        "Des points positifs et des points négatifs.",
        "price|Bien pour le prix, mais il ne faut pas en attendre des miracles.",
        "Avis mitigé.",
    ],
    "context": [
        "Je l'utilise depuis {dur}.",
        "Acheté sur les conseils de {rel}.",
        "price|Acheté pendant les soldes.",
        "Je l'ai pris pour remplacer l'ancien, qui avait rendu l'âme.",
    ],
    "dur": ["deux semaines", "un mois", "trois mois", "six mois", "plus d'un an"],
    "rel": ["ma mère", "mon père", "ma sœur", "mon frère", "mon conjoint", "ma fille"],
    "generic_pos": [
        "ship|Livraison rapide, reçu en deux jours.",
        "pack|Très bien emballé.",
        "service|Le service client a répondu dans l'heure.",
        "looks,price|L'ensemble a l'air bien plus cher qu'il ne l'est.",
    ],
    "generic_pos_gadget": ["manual|La notice est claire et bien illustrée."],
    "generic_neg": [
        "ship|Livraison très lente, presque trois semaines.",
        "pack|Le carton est arrivé écrasé, avec une rayure sur le produit.",
        "build|On nous vend du « haut de gamme », mais la qualité n'y est pas.",
        "service|Le service client ne répond jamais.",
        "looks|Ne ressemble pas du tout aux photos.",
    ],
    "minor_neg": ["pack|L'emballage est un peu excessif.", "price|Un peu cher quand même."],
    "minor_neg_gadget": ["manual|La notice pourrait être plus claire."],
    "close_pos": ["Je recommande !", "Je rachèterais sans hésiter.", "Foncez !"],
    "close_neg": ["Je ne recommande pas.", "Retour demandé.", "Passez votre chemin."],
    "close_mix": ["price|À prendre en promo.", "Ça dépanne, sans plus."],
    "short": {
        5: ["Parfait, conforme à la description !", "Top qualité, je recommande."],
        4: ["Très bien, quelques petits défauts.", "Bon produit."],
        3: ["Moyen.", "Correct, sans plus."],
        2: ["Décevant pour le prix."],
        1: ["Tombé en panne au bout de deux jours.", "Nul."],
    },
    "update_pos": ["Mise à jour après {dur} : toujours impeccable."],
    "update_neg": ["Mise à jour : au bout de {dur}, il est déjà bon à jeter. Je baisse ma note."],
    "update_mix": ["Mise à jour après {dur} : pas de nouveau problème, mais rien de mieux non plus."],
    "but": [("Seul bémol : ", True), ("Par contre, ", True), ("En revanche, ", True)],
    "plus": [("Point positif : ", True), ("Pour être honnête, ", True)],
    "emoji_pos": ["👍", "😍"],
    "emoji_neg": ["👎", "😤"],
    "emoji_mix": ["😕"],
    "cat_pos": {
        "audio": [
            "sound|Le son est clair et équilibré, avec de bonnes basses.",
            "battery|L'autonomie est excellente, je les recharge une fois par semaine.",
        ],
        "kitchen": [
            "noise,clean|Silencieux et très facile à nettoyer.",
            "controls|Simple à utiliser, même pour mes parents.",
        ],
        "footwear": [
            "size,comfort|Elles taillent normalement et sont confortables dès le premier jour.",
            "grip|Très bonne accroche, même sur les rochers mouillés.",
        ],
        "clothing": [
            "warm|Très chaud sans être encombrant.",
            "fabric|La matière est douce et ne gratte pas.",
        ],
        "furniture": [
            "assembly,parts|Montage en une demi-heure, tout était bien indiqué.",
            "build|Très stable, rien ne bouge.",
        ],
        "drinkware": [
            "hot|Le café reste chaud pendant des heures.",
            "leak|Parfaitement étanche, aucune fuite dans mon sac.",
        ],
    },
    "cat_neg": {
        "audio": [
            "conn|La connexion Bluetooth saute sans arrêt.",
            "comfort|Au bout d'une heure, ça fait mal aux oreilles.",
        ],
        "kitchen": [
            'noise|La boîte annonce "silencieux". Ce n\'est pas du tout le cas.',
            "clean|Le nettoyage est un vrai calvaire.",
        ],
        "footwear": [
            "size|Elles taillent au moins une pointure en dessous.",
            "comfort|Des ampoules aux deux talons dès la première sortie.",
        ],
        "clothing": [
            "wash|Le tissu a rétréci dès le premier lavage.",
            "fabric|Ça bouloche après deux utilisations.",
        ],
        "furniture": ["parts|Il manquait deux vis.", "build|Ça branle, même en serrant tout au maximum."],
        "drinkware": ["leak|Le couvercle fuit.", "hot|Le thé est tiède au bout d'une heure."],
    },
}

JA = {
    "sep": "",
    "open_pos": [
        "とても満足しています。",
        "まさに探していたものでした。",
        "price|この価格でこの品質は素晴らしいです。",
        "期待以上でした。",
        "買ってよかったです。",
    ],
    "open_5": ["文句なしの星五つです。", "今年一番の買い物でした。"],
    "open_neg": [
        "とても残念でした。",
        "price|お金の無駄でした。",
        "商品説明と全然違います。",
        "一週間で返品しました。",
    ],
    "open_mix": [
        "可もなく不可もなく、といったところです。",
        "良い点も悪い点もあります。",
        "price|値段相応だと思います。",
        "まあまあです。",
    ],
    "context": [
        "{dur}使ってみての感想です。",
        "{rel}に勧められて購入しました。",
        "前のものが壊れたので買い替えました。",
        "price|セールで安くなっていたので購入。",
        "{p}を探していて、レビューを見て決めました。",
    ],
    "dur": ["二週間", "一か月", "三か月", "半年", "一年以上"],
    "rel": ["父", "母", "妻", "夫", "姉", "友人"],
    "generic_pos": [
        "ship|発送が早く、翌日に届きました。",
        "pack|梱包も丁寧でした。",
        "service|問い合わせへの対応も迅速でした。",
        "looks|見た目も高級感があります。",
    ],
    "generic_pos_gadget": ["manual|説明書がわかりやすかったです。"],
    "generic_neg": [
        "ship|届くまでに三週間近くかかりました。",
        "pack|箱がつぶれていて、本体に傷がありました。",
        "build|「高品質」とうたっていますが、とてもそうは思えません。",
        "service|問い合わせても返事がありません。",
        "looks|写真と実物の色がかなり違います。",
    ],
    "minor_neg": [
        "price|強いて言えば、少し値段が高いです。",
        "looks|色のバリエーションがもっとあると嬉しいです。",
    ],
    "minor_neg_gadget": ["manual|説明書がもう少し詳しければ良かったです。"],
    "close_pos": ["おすすめです！", "リピート確定です。", "買って損はないと思います。"],
    "close_neg": ["おすすめしません。", "返品しました。", "購入はおすすめできません。"],
    "close_mix": ["price|セールなら買いかもしれません。", "こだわりがなければ十分だと思います。"],
    "short": {
        5: ["最高です！", "大満足です。"],
        4: ["概ね満足です。", "良い商品だと思います。"],
        3: ["普通です。", "値段なりです。"],
        2: ["いまいちでした。"],
        1: ["二日で壊れました。最悪です。", "不良品でした。"],
    },
    "update_pos": ["追記：{dur}経ちましたが、今も問題なく使えています。"],
    "update_neg": ["追記：{dur}でもう使えなくなりました。評価を下げます。"],
    "update_mix": ["追記：{dur}経ちましたが、特に変わりありません。"],
    "but": [("ただ、", False), ("一方で、", False)],
    "plus": [("とはいえ、", False), ("良い点もあり、", False)],
    "emoji_pos": ["😊", "✨"],
    "emoji_neg": ["😢"],
    "emoji_mix": ["🤔"],
    "cat_pos": {
        "audio": ["sound|音がクリアで、低音もしっかり出ます。", "battery|バッテリーの持ちがとても良いです。"],
        "kitchen": [
            "noise,clean|音が静かで、お手入れも簡単です。",
            "controls|操作がシンプルで使いやすいです。",
        ],
        "footwear": [
            "size,comfort|サイズ感ぴったりで、初日から快適に履けました。",
            "grip|濡れた岩の上でも滑りにくいです。",
        ],
        "clothing": [
            "warm|とても暖かいのに、着ぶくれしません。",
            "fabric|生地が柔らかく、チクチクしません。",
        ],
        "furniture": [
            "assembly|組み立ては三十分ほどで終わりました。",
            "build|とても安定していて、ぐらつきません。",
        ],
        "drinkware": [
            "hot|朝入れたコーヒーが昼でも温かいです。",
            "leak|しっかり密閉されていて、カバンに入れても漏れません。",
        ],
    },
    "cat_neg": {
        "audio": ["conn|接続が頻繁に切れます。", "comfort|一時間ほどで耳が痛くなります。"],
        "kitchen": ["noise|音がとてもうるさいです。", "clean|細かい部分の掃除が大変です。"],
        "footwear": [
            "size|サイズが小さめなので、ワンサイズ上をおすすめします。",
            "comfort|初日にかかとに靴擦れができました。",
        ],
        "clothing": ["wash|一度洗濯しただけで縮みました。", "fabric,wash|二回着ただけで毛玉ができました。"],
        "furniture": ["parts|ネジが二本足りませんでした。", "build|どれだけ締めてもぐらつきます。"],
        "drinkware": ["leak|蓋から水が漏れます。", "hot|一時間でぬるくなってしまいます。"],
    },
}

REVIEW_BANKS = {"en": EN, "zh": ZH, "es": ES, "de": DE, "fr": FR, "ja": JA}


# ---------------------------------------------------------------------------
# Reviews: composition
# ---------------------------------------------------------------------------


def _lower_first(s: str) -> str:
    """Lower-case the first letter of a sentence glued after a connector ("That said, the ...")."""
    if len(s) > 1 and s[0].isupper() and s[1].islower() and not s.startswith(("I ", "I'")):
        return s[0].lower() + s[1:]
    return s


def _glue(connector: tuple[str, bool], sentence: str) -> str:
    prefix, lower = connector
    return prefix + (_lower_first(sentence) if lower else sentence)


def _review_context(rng: random.Random, lang: str, prod: Product) -> dict[str, str]:
    b = REVIEW_BANKS[lang]
    ctx = {"dur": rng.choice(b["dur"]), "rel": rng.choice(b["rel"])}
    if lang == "en":
        pl = prod.plural
        ctx.update(
            p=prod.name,
            this="these" if pl else "this",
            obj="them" if pl else "it",
            subj="they" if pl else "it",
            Subj="They" if pl else "It",
            be="are" if pl else "is",
            have="have" if pl else "has",
            looks="look" if pl else "looks",
            old="pair" if pl else "one",
            usage=rng.choice(b["usage"][prod.cat]),
        )
    elif lang == "zh":
        ctx["p"] = prod.zh
    elif lang == "ja":
        ctx["p"] = prod.ja
    return ctx


def _split_tags(s: str) -> tuple[frozenset[str], str]:
    head, bar, rest = s.partition("|")
    if bar and head.replace(",", "").replace("_", "").isalpha() and head.islower():
        return frozenset(head.split(",")), rest
    return frozenset(), s


class _Picker:
    """Draws sentences from the banks, never two with a common tag (topic) in one review."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used_tags: set[str] = set()
        self.used: set[str] = set()

    def pick(self, candidates: list[str]) -> str | None:
        ok = []
        for c in candidates:
            tags, text = _split_tags(c)
            if text not in self.used and not (tags & self.used_tags):
                ok.append((tags, text))
        if not ok:
            return None
        tags, text = self.rng.choice(ok)
        self.used_tags |= tags
        self.used.add(text)
        return text

    def aspects(self, b: dict, cat: str, pol: str, k: int, strong: bool = False) -> list[str]:
        """Up to k aspect sentences of one polarity, preferring product-specific ones.

        ``strong`` also allows the most emphatic generic sentences (for 1-2 / 4-5 stars)."""
        out: list[str] = []
        generic = b[f"generic_{pol}"] + (b.get(f"generic_{pol}_strong", []) if strong else [])
        if cat in GADGET_CATS:
            generic = generic + b.get(f"generic_{pol}_gadget", [])
        for _ in range(k):
            first, second = b[f"cat_{pol}"][cat], generic
            if self.rng.random() >= 0.65:
                first, second = second, first
            s = self.pick(first) or self.pick(second)
            if s is None:
                break
            out.append(s)
        return out


def _pros_cons_review(rng: random.Random, b: dict, prod: Product, stars: int, f: Callable[[str], str]) -> str:
    n_pros, n_cons = {4: (rng.randint(2, 3), 1), 3: (2, 2), 2: (1, rng.randint(2, 3))}[stars]
    pros_bank, cons_bank = b["pros"][prod.cat], b["cons"][prod.cat]
    pro_idx = rng.sample(range(len(pros_bank)), n_pros)
    # pros[i] and cons[i] talk about the same thing: never list both
    con_idx = rng.sample([i for i in range(len(cons_bank)) if i not in pro_idx], n_cons)
    picker = _Picker(rng)
    lines = []
    if rng.random() < 0.6:
        opener = picker.pick(b[{4: "open_pos", 3: "open_mix", 2: "open_neg"}[stars]])
        lines += [f(opener), ""]
    lines.append("Pros: " + ", ".join(pros_bank[i] for i in sorted(pro_idx)))
    lines.append("Cons: " + ", ".join(cons_bank[i] for i in sorted(con_idx)))
    if rng.random() < 0.5:
        closer = picker.pick(b[{4: "close_pos", 3: "close_mix", 2: "close_neg"}[stars]])
        lines += ["", "Overall: " + _lower_first(f(closer))]
    return "\n".join(lines)


def _zh_struct_review(rng: random.Random, b: dict, prod: Product, stars: int, f: Callable[[str], str]) -> str:
    pol = "pos" if stars >= 4 else "neg" if stars <= 2 else "mix"
    lines = []
    for field, vals in b["struct"].items():
        if rng.random() < 0.75:
            v_pol = pol if pol != "mix" else rng.choice(["pos", "mix", "neg"])
            if stars == 4 and rng.random() < 0.2:
                v_pol = "mix"
            lines.append(f"{field}：{rng.choice(vals[v_pol])}")
    use_pol = "pos" if stars >= 4 else "neg" if stars <= 2 else rng.choice(["pos", "neg"])
    lines.append("使用感受：" + _split_tags(rng.choice(b[f"cat_{use_pol}"][prod.cat]))[1])
    text = "\n".join(lines)
    if rng.random() < 0.5:
        closer = {"pos": "close_pos", "neg": "close_neg", "mix": "close_mix"}[pol]
        text += "\n" + f(_split_tags(rng.choice(b[closer]))[1])
    return text


def compose_review(rng: random.Random, lang: str, prod: Product, stars: int) -> str:
    b = REVIEW_BANKS[lang]
    ctx = _review_context(rng, lang, prod)

    def f(s: str) -> str:
        return s.format_map(ctx)

    pol = "pos" if stars >= 4 else "neg" if stars <= 2 else "mix"
    r = rng.random()
    if r < 0.13:
        text = f(rng.choice(b["short"][stars]))
        if rng.random() < 0.25:
            text += " " + rng.choice(b[f"emoji_{pol}"])
        return text
    if lang == "en" and stars in (2, 3, 4) and r < 0.21:
        return _pros_cons_review(rng, b, prod, stars, f)
    if lang == "zh" and r < 0.25:
        return _zh_struct_review(rng, b, prod, stars, f)

    pk = _Picker(rng)
    # Openers go first so that e.g. "Great value for money." blocks a later "Way overpriced".
    opener = pk.pick(b[f"open_{pol}"] + (b["open_5"] * 2 if stars == 5 else [])) if rng.random() < 0.85 else None
    context = pk.pick(b["context"]) if rng.random() < 0.45 else None

    # body: aspect sentences consistent with the star rating
    k = rng.choice([1, 1, 2, 2, 2, 3, 3, 4])
    if pol == "pos":
        body = pk.aspects(b, prod.cat, "pos", k, strong=True)
        if stars == 4 and rng.random() < 0.75:
            # a 4-star review has one small complaint: a minor one or a product-specific one
            minors = b["minor_neg"] + (b.get("minor_neg_gadget", []) if prod.cat in GADGET_CATS else [])
            minor = pk.pick(minors) if rng.random() < 0.6 else None
            if minor:
                body.append(minor)
            elif (flaw := pk.pick(b["cat_neg"][prod.cat])) is not None:
                body.append(_glue(rng.choice(b["but"]), flaw))
    elif pol == "neg":
        body = pk.aspects(b, prod.cat, "neg", k, strong=True)
        if stars == 2 and rng.random() < 0.5:
            for s in pk.aspects(b, prod.cat, "pos", 1):
                body.insert(rng.randint(1, len(body)), _glue(rng.choice(b["plus"]), s))
    else:
        goods = pk.aspects(b, prod.cat, "pos", rng.choice([1, 1, 2]))
        bads = pk.aspects(b, prod.cat, "neg", rng.choice([1, 1, 2]))
        if not goods or not bads:
            body = goods + bads
        elif rng.random() < 0.5:
            body = goods + [_glue(rng.choice(b["but"]), bads[0])] + bads[1:]
        else:
            body = bads + [_glue(rng.choice(b["plus"]), goods[0])] + goods[1:]

    parts = [opener] if opener else []
    if context:
        parts.insert(rng.randint(0, len(parts)), context)
    parts.extend(body)
    if rng.random() < 0.55:
        closer = pk.pick(b[f"close_{pol}"])
        if closer:
            parts.append(closer)
    parts = [f(p) for p in parts]

    sep = b["sep"]
    if len(parts) >= 5 and rng.random() < 0.45:
        cut = rng.randint(2, len(parts) - 2)
        text = sep.join(parts[:cut]) + rng.choice(["\n\n", "\n"]) + sep.join(parts[cut:])
    else:
        text = sep.join(parts)
    if rng.random() < 0.09:
        later = rng.choice([d for d in b["dur"] if d != ctx["dur"]])
        text += "\n\n" + rng.choice(b[f"update_{pol}"]).format_map({**ctx, "dur": later})
    if rng.random() < 0.08:
        text += (" " if sep else "") + rng.choice(b[f"emoji_{pol}"])
    return text


def make_reviews(seed: int = REVIEWS_SEED) -> list[dict[str, object]]:
    rng = random.Random(seed)
    langs = [lang for lang, n in REVIEW_LANG_COUNTS.items() for _ in range(n)]
    assert len(langs) == N_REVIEWS
    rng.shuffle(langs)
    star_values, star_weights = zip(*STAR_WEIGHTS.items(), strict=True)
    seen: set[str] = set()
    rows: list[dict[str, object]] = []
    for i, lang in enumerate(langs, start=1):
        products = [p for p in PRODUCTS if p.cat in LANG_CATS[lang]]
        for _attempt in range(100):
            prod = rng.choice(products)
            stars = rng.choices(star_values, star_weights)[0]
            text = compose_review(rng, lang, prod, stars)
            if text not in seen:
                break
        else:  # pragma: no cover - the banks are large enough
            raise RuntimeError("could not compose a unique review")
        seen.add(text)
        rows.append({"review_id": f"r{i:04d}", "product": prod.name, "stars": stars, "lang": lang, "text": text})
    return rows


def reviews_csv(rows: list[dict[str, object]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["review_id", "product", "stars", "lang", "text"], lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


# ---------------------------------------------------------------------------
# Corpus: encyclopedic snippets
# ---------------------------------------------------------------------------
# (kind, name, sentences).  The first sentence introduces the subject; a document takes
# the introduction (usually) plus a few of the other sentences, in their original order.

FACTS_EN: list[tuple[str, str, list[str]]] = [
    (
        "city",
        "Lisbon",
        [
            "Lisbon is the capital and largest city of Portugal, built on a series of hills above the Tagus estuary.",
            "Much of the city was destroyed by an earthquake, a tsunami and fires in 1755.",
            "Old yellow trams still climb the steep, narrow streets of the Alfama district.",
            "The city is known for fado, a melancholic style of song often performed in small taverns.",
            "Custard tarts called pastéis de nata are sold in cafés all over town.",
        ],
    ),
    (
        "city",
        "Kyoto",
        [
            "Kyoto was the imperial capital of Japan for more than a thousand years.",
            "The city has well over a thousand Buddhist temples and hundreds of Shinto shrines.",
            "Fushimi Inari shrine is famous for its thousands of orange torii gates.",
            "Kyoto was largely spared from bombing during the Second World War.",
            "In spring, crowds gather along the Philosopher's Path to see the cherry blossoms.",
        ],
    ),
    (
        "city",
        "Cairo",
        [
            "Cairo, the capital of Egypt, lies on the Nile just south of the river's delta.",
            "The pyramids of Giza stand on the western edge of the greater metropolitan area.",
            "Its historic centre contains hundreds of mosques, madrasas and old merchant houses.",
            "Al-Azhar, founded in the 10th century, is one of the oldest universities still in operation.",
            "With more than 20 million people in its metropolitan area, it is one of the largest cities in Africa.",
        ],
    ),
    (
        "city",
        "Vancouver",
        [
            "Vancouver is a coastal city in the Canadian province of British Columbia.",
            "It is surrounded by water on three sides and backed by the North Shore Mountains.",
            "Stanley Park, a large forested park, sits at the edge of downtown.",
            "The city hosted the Winter Olympic Games in 2010.",
            "Its mild, rainy climate makes it one of the warmest major Canadian cities in winter.",
        ],
    ),
    (
        "city",
        "Buenos Aires",
        [
            "Buenos Aires is the capital of Argentina, on the western shore of the Río de la Plata.",
            "Tango developed in the city's port neighbourhoods in the late 19th century.",
            "The Avenida 9 de Julio is one of the widest avenues in the world.",
            "Residents of the city are known as porteños, meaning people of the port.",
            "Its cafés and bookshops are famous across Latin America.",
        ],
    ),
    (
        "city",
        "Edinburgh",
        [
            "Edinburgh is the capital of Scotland, built around an extinct volcano that now holds Edinburgh Castle.",
            "The Old Town and New Town together form a UNESCO World Heritage Site.",
            "Each August the city hosts the Festival Fringe, one of the largest arts festivals in the world.",
            "Arthur's Seat, a hill in Holyrood Park, offers views over the whole city.",
        ],
    ),
    (
        "city",
        "Istanbul",
        [
            "Istanbul straddles the Bosphorus strait, with parts of the city in both Europe and Asia.",
            "Known earlier as Byzantium and later Constantinople, it was the capital of the Byzantine and "
            "Ottoman empires.",
            "The Hagia Sophia was completed in 537 and has served as a church, a mosque and a museum.",
            "The Grand Bazaar is one of the oldest and largest covered markets in the world.",
        ],
    ),
    (
        "city",
        "Reykjavik",
        [
            "Reykjavik is the capital of Iceland and the northernmost capital of a sovereign state.",
            "Most of its buildings are heated with geothermal water piped in from hot springs.",
            "In midwinter the city gets only about four hours of daylight, while in midsummer the sun barely sets.",
            "Around two thirds of Iceland's population live in the capital region.",
        ],
    ),
    (
        "city",
        "Singapore",
        [
            "Singapore is a city-state at the southern tip of the Malay Peninsula.",
            "Its port is one of the busiest in the world.",
            "The country has four official languages: English, Malay, Mandarin and Tamil.",
            "Hawker centres, open-air food courts with dozens of small stalls, are at the heart of daily life.",
            "Despite its density, the city has invested heavily in parks and green rooftops.",
        ],
    ),
    (
        "city",
        "Mexico City",
        [
            "Mexico City is built on the site of Tenochtitlan, the Aztec capital founded on an island in Lake Texcoco.",
            "Because it sits on old lake beds, parts of the city are slowly sinking.",
            "At about 2,240 metres above sea level, it is one of the highest major cities in the world.",
            "The Zócalo, its main square, is one of the largest city squares in the Americas.",
        ],
    ),
    (
        "city",
        "Prague",
        [
            "Prague, the capital of the Czech Republic, lies on both banks of the Vltava river.",
            "The Charles Bridge, begun in 1357, links the Old Town with the Lesser Town.",
            "Its astronomical clock, first installed in 1410, is among the oldest still working.",
            "Prague Castle is one of the largest castle complexes in the world.",
        ],
    ),
    (
        "city",
        "Nairobi",
        [
            "Nairobi is the capital and largest city of Kenya.",
            "Nairobi National Park lies just a few kilometres from the city centre, so giraffes can be seen "
            "against a backdrop of office towers.",
            "The city began as a depot on the Uganda Railway around 1899.",
            "It has become a major hub for technology start-ups in East Africa.",
        ],
    ),
    (
        "animal",
        "Octopus",
        [
            "Octopuses are soft-bodied marine animals with eight arms and no internal skeleton.",
            "They have three hearts and blue, copper-based blood.",
            "Many species can change the colour and texture of their skin in a fraction of a second.",
            "Most of an octopus's neurons are found in its arms rather than in its central brain.",
            "They are known for solving puzzles and escaping from aquarium tanks.",
        ],
    ),
    (
        "animal",
        "Honeybee",
        [
            "Honeybees live in colonies of tens of thousands of workers and a single queen.",
            "Workers tell each other where to find flowers with a movement called the waggle dance.",
            "To make one kilogram of honey, bees may visit millions of flowers.",
            "Summer workers live only a few weeks, but winter bees can survive for several months.",
            "Bees pollinate many fruit and vegetable crops.",
        ],
    ),
    (
        "animal",
        "Emperor penguin",
        [
            "The emperor penguin is the largest living penguin and breeds only in Antarctica.",
            "Males keep a single egg warm on their feet through the Antarctic winter, fasting for about two months.",
            "Tight huddles of thousands of birds help them survive temperatures below minus 40 degrees Celsius.",
            "They can dive deeper than 500 metres in search of fish and squid.",
        ],
    ),
    (
        "animal",
        "Red fox",
        [
            "The red fox is the most widespread wild carnivore in the world.",
            "It has adapted well to cities, where it feeds on scraps, rodents and insects.",
            "Foxes use a high-pitched scream to communicate, especially during the winter breeding season.",
            "In snow, they can hear rodents moving under the surface and pounce to catch them.",
        ],
    ),
    (
        "animal",
        "African elephant",
        [
            "African elephants are the largest land animals alive today.",
            "An elephant's trunk has tens of thousands of muscles and can lift a log or pick up a single peanut.",
            "Herds are led by an older female known as the matriarch.",
            "Elephants communicate with low rumbles that can travel several kilometres.",
            "An adult can eat well over 100 kilograms of plants a day.",
        ],
    ),
    (
        "animal",
        "Hummingbird",
        [
            "Hummingbirds are tiny birds found only in the Americas.",
            "They can hover in place and are the only birds able to fly backwards.",
            "Their hearts can beat more than 1,000 times a minute in flight.",
            "To save energy at night, many species drop into a deep, sleep-like state called torpor.",
        ],
    ),
    (
        "animal",
        "Tardigrade",
        [
            "Tardigrades, also called water bears, are microscopic animals that live in moss, soil and water.",
            "They survive extreme drying by curling up into a dormant state called a tun.",
            "In experiments, some have survived exposure to the vacuum of space.",
            "Most are less than a millimetre long.",
        ],
    ),
    (
        "animal",
        "Arctic tern",
        [
            "The Arctic tern makes the longest known migration of any animal.",
            "It flies from breeding grounds in the Arctic to the Antarctic and back every year.",
            "Because it follows the summer, it probably sees more daylight than any other creature.",
            "Over its lifetime, a single bird may fly a distance equal to several trips to the Moon and back.",
        ],
    ),
    (
        "animal",
        "Giant panda",
        [
            "The giant panda lives in mountain forests in central China.",
            "Although it belongs to the order Carnivora, it eats almost nothing but bamboo.",
            "A panda may spend 10 to 16 hours a day eating.",
            "Cubs are born pink, blind and tiny, weighing only about 100 to 200 grams.",
        ],
    ),
    (
        "animal",
        "Axolotl",
        [
            "The axolotl is a salamander native to the lakes and canals around Mexico City.",
            "Unlike most amphibians, it keeps its feathery external gills as an adult.",
            "It can regrow lost limbs and even parts of its heart.",
            "In the wild it is critically endangered because of pollution and habitat loss.",
        ],
    ),
    (
        "animal",
        "Crow",
        [
            "Crows are among the most intelligent birds.",
            "New Caledonian crows make and use tools to pull insects out of tree bark.",
            "Studies have shown that crows can recognise individual human faces.",
            "In winter they often gather in large communal roosts.",
        ],
    ),
    (
        "animal",
        "Blue whale",
        [
            "The blue whale is the largest animal known to have ever lived.",
            "It can grow to around 30 metres long.",
            "Despite its size, it feeds mainly on krill, tiny shrimp-like animals.",
            "Its low-frequency calls can travel hundreds of kilometres underwater.",
        ],
    ),
    (
        "science",
        "Photosynthesis",
        [
            "Photosynthesis is the process by which plants, algae and some bacteria turn light into chemical energy.",
            "It uses carbon dioxide and water and releases oxygen as a by-product.",
            "The green pigment chlorophyll absorbs mainly red and blue light and reflects green.",
            "Almost all of the oxygen in Earth's atmosphere was produced by photosynthesis.",
        ],
    ),
    (
        "science",
        "Plate tectonics",
        [
            "Plate tectonics describes how Earth's outer shell is broken into large plates that slowly move.",
            "The plates move a few centimetres a year, roughly as fast as fingernails grow.",
            "Earthquakes and volcanoes are concentrated along the boundaries between plates.",
            "The Himalayas formed when the Indian plate collided with the Eurasian plate.",
        ],
    ),
    (
        "science",
        "The speed of light",
        [
            "Light travels through a vacuum at about 300,000 kilometres per second.",
            "Sunlight takes a little over eight minutes to reach Earth.",
            "Nothing with mass can travel as fast as light.",
            "Astronomers measure large distances in light-years, the distance light travels in one year.",
        ],
    ),
    (
        "science",
        "DNA",
        [
            "DNA is the molecule that carries genetic instructions in all known living organisms.",
            "Its double-helix structure was described in 1953, based partly on X-ray images by Rosalind Franklin.",
            "The human genome contains about three billion base pairs.",
            "Genes are stretches of DNA that usually contain instructions for building proteins.",
        ],
    ),
    (
        "science",
        "The water cycle",
        [
            "The water cycle describes how water moves between the oceans, the air and the land.",
            "Heat from the Sun evaporates water, which later condenses into clouds.",
            "Most rain falls straight back into the ocean.",
            "Water can stay locked in deep groundwater or ice sheets for thousands of years.",
        ],
    ),
    (
        "science",
        "Black holes",
        [
            "A black hole is a region of space where gravity is so strong that not even light can escape.",
            "Its boundary is called the event horizon.",
            "In 2019 astronomers published the first image of a black hole's shadow, in the galaxy M87.",
            "Most large galaxies, including the Milky Way, have a supermassive black hole at their centre.",
        ],
    ),
    (
        "science",
        "Vaccines",
        [
            "Vaccines train the immune system to recognise a pathogen without causing the disease.",
            "Edward Jenner developed an early smallpox vaccine in 1796.",
            "Smallpox was declared eradicated in 1980 after a worldwide vaccination campaign.",
            "Some vaccines need booster doses to keep protection high.",
        ],
    ),
    (
        "science",
        "Rainbows",
        [
            "A rainbow forms when sunlight is refracted, reflected and dispersed inside raindrops.",
            "The colours always appear in the same order, with red on the outside and violet on the inside.",
            "To see a rainbow, the Sun has to be behind you.",
            "A fainter second rainbow sometimes appears, with its colours reversed.",
        ],
    ),
    (
        "science",
        "The Moon",
        [
            "The Moon is Earth's only natural satellite, about a quarter of Earth's diameter.",
            "It always shows the same face to Earth because it rotates once for every orbit.",
            "Its gravity is the main cause of ocean tides.",
            "Twelve astronauts walked on the Moon between 1969 and 1972.",
        ],
    ),
    (
        "science",
        "The periodic table",
        [
            "The periodic table arranges the chemical elements by atomic number.",
            "Dmitri Mendeleev published an early version in 1869 and left gaps for elements not yet discovered.",
            "Hydrogen is the lightest and most abundant element in the universe.",
            "Elements in the same column often have similar chemical properties.",
        ],
    ),
    (
        "science",
        "Volcanoes",
        [
            "A volcano is an opening in Earth's crust through which molten rock, ash and gases escape.",
            "Mauna Loa in Hawaii is one of the largest volcanoes on Earth by volume.",
            "Volcanic ash can disrupt air travel over a large area, as happened in Europe in 2010.",
            "Over time, volcanic soils can become very fertile.",
        ],
    ),
    (
        "science",
        "Sound",
        [
            "Sound is a vibration that travels through a medium such as air, water or solid material.",
            "In air at room temperature it travels at about 343 metres per second.",
            "Sound cannot travel through a vacuum.",
            "Humans typically hear frequencies between about 20 and 20,000 hertz.",
        ],
    ),
    (
        "history",
        "The printing press",
        [
            "Johannes Gutenberg developed a printing press with movable metal type in Mainz around 1450.",
            "The Gutenberg Bible, printed in the 1450s, was one of the first major books printed this way in Europe.",
            "Printing made books cheaper and helped spread ideas during the Renaissance and the Reformation.",
            "Movable type had been invented earlier in China, where Bi Sheng used clay characters in the 11th century.",
        ],
    ),
    (
        "history",
        "The Silk Road",
        [
            "The Silk Road was a network of trade routes linking China with Central Asia, the Middle East and Europe.",
            "Besides silk, merchants traded spices, glass, paper, horses and precious metals.",
            "Religions and ideas, including Buddhism, travelled along the same routes.",
            "The name was popularised in the 19th century by the German geographer Ferdinand von Richthofen.",
        ],
    ),
    (
        "history",
        "The first Moon landing",
        [
            "On 20 July 1969, the Apollo 11 lunar module landed on the Moon.",
            "Neil Armstrong and Buzz Aldrin spent about two and a half hours walking on the surface.",
            "Michael Collins stayed in lunar orbit in the command module.",
            "Hundreds of millions of people watched the broadcast on television.",
        ],
    ),
    (
        "history",
        "The Great Wall of China",
        [
            "The Great Wall of China is a series of fortifications built over many centuries.",
            "Most of the wall that visitors see today dates from the Ming dynasty.",
            "Contrary to a popular myth, it is very hard to see from space with the naked eye.",
            "Including all its branches, its total length has been estimated at over 20,000 kilometres.",
        ],
    ),
    (
        "history",
        "Roman aqueducts",
        [
            "The Romans built aqueducts to bring fresh water into their cities.",
            "They relied on a gentle, continuous downhill slope over many kilometres.",
            "The Pont du Gard in southern France is one of the best-preserved examples.",
            "At its height, ancient Rome was supplied by eleven aqueducts.",
        ],
    ),
    (
        "history",
        "The Berlin Wall",
        [
            "The Berlin Wall divided East and West Berlin from 1961 to 1989.",
            "On the night of 9 November 1989, crowds began crossing freely after a confused announcement "
            "about new travel rules.",
            "Germany was formally reunified on 3 October 1990.",
            "Short sections of the wall are preserved today as memorials.",
        ],
    ),
    (
        "history",
        "Magna Carta",
        [
            "Magna Carta was a charter agreed to by King John of England in 1215.",
            "It established the principle that the king was not above the law.",
            "Only a few of its clauses are still part of English law today.",
            "Four original copies from 1215 survive.",
        ],
    ),
    (
        "history",
        "The Industrial Revolution",
        [
            "The Industrial Revolution began in Britain in the second half of the 18th century.",
            "Steam engines, greatly improved by James Watt, powered factories, mines and later railways.",
            "Textile production was among the first industries to be mechanised.",
            "Cities grew rapidly as people moved from the countryside to work in factories.",
        ],
    ),
    (
        "history",
        "The Rosetta Stone",
        [
            "The Rosetta Stone is a stone slab inscribed with the same decree in three scripts.",
            "It was found in 1799 near the town of Rashid in Egypt.",
            "Jean-François Champollion used it to decipher Egyptian hieroglyphs in 1822.",
            "It has been on display in the British Museum since 1802.",
        ],
    ),
    (
        "history",
        "The voyages of Zheng He",
        [
            "Between 1405 and 1433, the admiral Zheng He led seven large voyages for the Ming dynasty.",
            "His fleets sailed through Southeast Asia and the Indian Ocean as far as the east coast of Africa.",
            "Some of his ships were among the largest wooden vessels of their time.",
        ],
    ),
    (
        "food",
        "Risotto",
        [
            "Risotto is a northern Italian rice dish cooked slowly in broth until creamy.",
            "It is traditionally made with short-grain rice such as Arborio or Carnaroli.",
            "The broth is added a ladle at a time while the rice is stirred.",
            "Butter and grated Parmesan are stirred in at the very end.",
            "Risotto alla milanese gets its golden colour from saffron.",
        ],
    ),
    (
        "food",
        "Miso soup",
        [
            "Miso soup is a Japanese soup made from dashi stock and fermented soybean paste.",
            "Common additions include tofu, seaweed and spring onions.",
            "The miso should be stirred in at the end and not boiled, to keep its aroma.",
            "It is often served with rice at breakfast.",
        ],
    ),
    (
        "food",
        "Guacamole",
        [
            "Guacamole is an avocado dip from Mexico.",
            "It is made by mashing ripe avocados with lime juice, salt, onion, chilli and coriander.",
            "Lime juice slows down browning.",
            "It tastes best when eaten fresh.",
        ],
    ),
    (
        "food",
        "Sourdough bread",
        [
            "Sourdough bread is leavened with a starter of wild yeasts and lactic acid bacteria.",
            "The starter is kept alive by regularly feeding it flour and water.",
            "A long fermentation gives the bread its slightly sour taste and chewy crumb.",
            "A very hot oven and a little steam help form a crisp crust.",
        ],
    ),
    (
        "food",
        "Jiaozi",
        [
            "Jiaozi are Chinese dumplings usually filled with minced meat and vegetables.",
            "They are especially popular in northern China during the Spring Festival.",
            "They can be boiled, steamed or pan-fried.",
            "Many families make them together, folding hundreds at a time.",
        ],
    ),
    (
        "food",
        "Paella",
        [
            "Paella is a rice dish from the Valencia region of Spain.",
            "It is cooked in a wide, shallow pan that gives the dish its name.",
            "The traditional Valencian version uses chicken, rabbit and green beans rather than seafood.",
            "A crisp layer of toasted rice at the bottom, called socarrat, is highly prized.",
        ],
    ),
    (
        "food",
        "Ratatouille",
        [
            "Ratatouille is a vegetable stew from Provence in southern France.",
            "It usually contains tomatoes, aubergine, courgette, peppers, onion and garlic.",
            "Some cooks fry each vegetable separately before combining them.",
            "It can be served hot or cold and often tastes even better the next day.",
        ],
    ),
    (
        "food",
        "Pancakes",
        [
            "A basic pancake batter needs only flour, eggs, milk and a pinch of salt.",
            "Letting the batter rest for half an hour makes the pancakes more tender.",
            "Heat the pan well and use just a thin film of butter.",
            "Flip them when bubbles appear on the surface.",
        ],
    ),
    (
        "food",
        "Dal",
        [
            "Dal is a dish of lentils, peas or beans cooked with spices, common across South Asia.",
            "Red lentils cook quickly and break down into a smooth purée.",
            "A tempering of spices fried in hot oil or ghee, called tadka, is often poured over at the end.",
            "It is usually eaten with rice or flatbread.",
        ],
    ),
    (
        "food",
        "Brewing coffee",
        [
            "Coffee beans are the roasted seeds of the coffee plant's fruit.",
            "For most brewing methods, water just off the boil, around 90 to 96 degrees Celsius, works best.",
            "Grinding the beans right before brewing preserves more aroma.",
            "Espresso needs a fine grind, while a French press works best with a coarse one.",
        ],
    ),
    (
        "nature",
        "Bamboo",
        [
            "Bamboo is a grass, and some species are among the fastest-growing plants in the world.",
            "Certain bamboos can grow nearly a metre in a single day.",
            "Many species flower only once every few decades, often all at the same time.",
            "It is used for building, furniture, paper and food.",
        ],
    ),
    (
        "nature",
        "Sunflowers",
        [
            "Young sunflowers turn to follow the Sun across the sky during the day.",
            "Mature flower heads usually stay facing east.",
            "Each large head is made up of hundreds of small flowers arranged in spirals.",
            "Sunflower seeds are pressed for oil or eaten roasted.",
        ],
    ),
    (
        "nature",
        "Oak trees",
        [
            "Oak trees can live for several hundred years.",
            "A single mature oak can support hundreds of species of insects.",
            "Acorns are an important food for jays, squirrels and deer.",
            "Oak wood has long been used for ships, barrels and furniture.",
        ],
    ),
    (
        "nature",
        "Coral reefs",
        [
            "Coral reefs are built by colonies of tiny animals called polyps.",
            "They cover less than one percent of the ocean floor but support about a quarter of all marine species.",
            "Unusually warm water can cause bleaching, when corals expel the algae living in their tissues.",
            "The Great Barrier Reef off Australia is the largest reef system in the world.",
        ],
    ),
    (
        "technology",
        "The bicycle",
        [
            "The first bicycles of the 1810s had no pedals; riders pushed themselves along with their feet.",
            "The safety bicycle of the 1880s, with two equal wheels and a chain drive, set the design still used today.",
            "Air-filled tyres, popularised by John Boyd Dunlop, made riding far more comfortable.",
            "Bicycles gave many people, especially women, a new kind of independence in the late 19th century.",
        ],
    ),
    (
        "technology",
        "The internet",
        [
            "The internet grew out of ARPANET, a US research network that sent its first message in 1969.",
            "The World Wide Web was proposed by Tim Berners-Lee at CERN in 1989.",
            "Data travels across the internet in small packets that can take different routes.",
            "Undersea fibre-optic cables carry most of the traffic between continents.",
        ],
    ),
    (
        "technology",
        "The telephone",
        [
            "Alexander Graham Bell was granted a patent for the telephone in 1876.",
            "Early telephone calls were connected by hand by switchboard operators.",
            "The first transatlantic telephone cable went into service in 1956.",
            "Today most calls travel, at least partly, as digital data over the internet.",
        ],
    ),
]

FACTS_ZH: list[tuple[str, str, list[str]]] = [
    (
        "city",
        "杭州",
        [
            "杭州是浙江省省会，位于钱塘江下游。",
            "西湖是杭州最著名的景点，2011年被列入世界遗产名录。",
            "杭州周边的龙井村以出产龙井茶而闻名。",
            "京杭大运河的南端就在杭州。",
        ],
    ),
    (
        "city",
        "西安",
        [
            "西安古称长安，是中国历史上建都朝代最多的城市之一。",
            "秦始皇陵兵马俑位于西安以东的临潼区。",
            "西安城墙是中国现存规模最大、保存最完整的古代城垣之一。",
            "回民街的肉夹馍和羊肉泡馍深受游客喜爱。",
        ],
    ),
    (
        "city",
        "成都",
        [
            "成都是四川省省会，地处四川盆地西部。",
            "成都大熊猫繁育研究基地每年吸引大量游客。",
            "成都人喜欢喝茶、打麻将，生活节奏相对悠闲。",
            "火锅和串串香是成都最有代表性的美食。",
        ],
    ),
    (
        "city",
        "里斯本",
        [
            "里斯本是葡萄牙的首都，建在特茹河河口附近的几座山丘上。",
            "1755年的大地震和随后的海啸、火灾几乎摧毁了整座城市。",
            "黄色的老式有轨电车至今仍在狭窄陡峭的街道上行驶。",
            "蛋挞是当地最受欢迎的点心之一。",
        ],
    ),
    (
        "city",
        "伊斯坦布尔",
        [
            "伊斯坦布尔横跨博斯普鲁斯海峡，城市一部分在欧洲，一部分在亚洲。",
            "这座城市曾名拜占庭和君士坦丁堡。",
            "圣索菲亚大教堂建成于公元537年，先后作为教堂、清真寺和博物馆使用。",
            "大巴扎是世界上最古老、规模最大的室内市场之一。",
        ],
    ),
    (
        "city",
        "新加坡",
        [
            "新加坡是位于马来半岛南端的城市国家。",
            "新加坡的官方语言有英语、马来语、华语和泰米尔语四种。",
            "小贩中心里有各式各样的平价美食，是当地人日常生活的一部分。",
            "虽然人口密集，新加坡却有大量公园和屋顶绿化。",
        ],
    ),
    (
        "animal",
        "大熊猫",
        [
            "大熊猫主要生活在中国四川、陕西和甘肃的山区森林中。",
            "虽然属于食肉目，大熊猫的食物几乎全部是竹子。",
            "一只大熊猫每天要花十几个小时进食。",
            "刚出生的大熊猫幼崽只有一两百克重，全身粉红色。",
        ],
    ),
    (
        "animal",
        "章鱼",
        [
            "章鱼是一种没有骨骼的海洋软体动物，有八条腕。",
            "章鱼有三个心脏，血液呈蓝色。",
            "很多章鱼能在一瞬间改变皮肤的颜色和纹理。",
            "章鱼很聪明，能打开瓶盖，甚至从水族箱中逃走。",
        ],
    ),
    (
        "animal",
        "蜜蜂",
        [
            "一个蜂群通常由一只蜂王和数万只工蜂组成。",
            "工蜂通过“摇摆舞”告诉同伴花蜜的方向和距离。",
            "酿造一公斤蜂蜜，蜜蜂需要采访数百万朵花。",
            "蜜蜂是许多水果和蔬菜的重要传粉者。",
        ],
    ),
    (
        "animal",
        "蓝鲸",
        [
            "蓝鲸是地球上已知体型最大的动物。",
            "成年蓝鲸体长可达30米左右。",
            "尽管体型巨大，蓝鲸主要以磷虾为食。",
            "蓝鲸的叫声在水下可以传播数百公里。",
        ],
    ),
    (
        "animal",
        "帝企鹅",
        [
            "帝企鹅是现存体型最大的企鹅，只在南极繁殖。",
            "在南极的寒冬里，雄企鹅把蛋放在脚上孵化，大约两个月不进食。",
            "成千上万只企鹅挤在一起，依靠彼此的体温抵御严寒。",
        ],
    ),
    (
        "science",
        "光合作用",
        [
            "光合作用是植物、藻类和部分细菌利用光能合成有机物的过程。",
            "这一过程吸收二氧化碳和水，并释放出氧气。",
            "叶绿素主要吸收红光和蓝光，反射绿光，所以叶子看起来是绿色的。",
            "地球大气中的氧气几乎都来自光合作用。",
        ],
    ),
    (
        "science",
        "光速",
        [
            "光在真空中的传播速度约为每秒30万公里。",
            "太阳光到达地球大约需要8分多钟。",
            "天文学家用“光年”来表示遥远的距离，即光在一年中走过的路程。",
        ],
    ),
    (
        "science",
        "板块构造",
        [
            "板块构造理论认为，地球的外壳分成若干块缓慢移动的板块。",
            "板块每年移动几厘米，和指甲生长的速度差不多。",
            "地震和火山大多分布在板块交界处。",
            "喜马拉雅山脉是印度板块与欧亚板块碰撞形成的。",
        ],
    ),
    (
        "science",
        "月球",
        [
            "月球是地球唯一的天然卫星，直径约为地球的四分之一。",
            "月球总是以同一面朝向地球。",
            "海洋潮汐主要是由月球引力引起的。",
            "1969年至1972年间，共有12名宇航员登上月球。",
        ],
    ),
    (
        "science",
        "黑洞",
        [
            "黑洞是引力极强的天体，连光都无法逃脱。",
            "黑洞的边界被称为事件视界。",
            "2019年，科学家公布了人类拍摄的第一张黑洞照片。",
        ],
    ),
    (
        "history",
        "活字印刷术",
        [
            "北宋时期，毕昇发明了泥活字印刷术。",
            "活字印刷可以重复使用字模，大大提高了印刷效率。",
            "大约四百年后，古登堡在欧洲发展出金属活字印刷机。",
        ],
    ),
    (
        "history",
        "丝绸之路",
        [
            "丝绸之路是古代连接中国与中亚、西亚和欧洲的商贸通道。",
            "除了丝绸，商人们还交易香料、玻璃、纸张和马匹。",
            "佛教等宗教和思想也沿着这条道路传播。",
            "“丝绸之路”这一名称是19世纪由德国地理学家李希霍芬提出的。",
        ],
    ),
    (
        "history",
        "郑和下西洋",
        [
            "1405年至1433年间，郑和率领船队七次远航。",
            "船队经过东南亚和印度洋，最远到达非洲东海岸。",
            "郑和的宝船是当时世界上最大的木制帆船之一。",
        ],
    ),
    (
        "history",
        "长城",
        [
            "长城是中国古代修建的一系列防御工事，修筑历史长达两千多年。",
            "今天人们看到的长城大多建于明朝。",
            "有一种说法认为在太空中能用肉眼看到长城，其实这并不准确。",
        ],
    ),
    (
        "food",
        "饺子",
        [
            "饺子是中国北方的传统食物，春节时尤其常见。",
            "饺子馅通常由肉末和蔬菜调制而成。",
            "饺子可以煮、蒸，也可以煎成锅贴。",
            "很多家庭会在除夕夜一起包饺子。",
        ],
    ),
    (
        "food",
        "麻婆豆腐",
        [
            "麻婆豆腐是一道著名的川菜。",
            "这道菜以豆腐和牛肉末为主料，用豆瓣酱和花椒调味。",
            "正宗的麻婆豆腐讲究麻、辣、烫、香、酥、嫩、鲜。",
        ],
    ),
    (
        "food",
        "茶",
        [
            "中国是茶的故乡，饮茶的历史已有数千年。",
            "根据加工方法不同，茶可以分为绿茶、红茶、乌龙茶、白茶等。",
            "泡绿茶的水温一般以80度左右为宜，水太烫会让茶变苦。",
            "唐代陆羽所著的《茶经》是世界上第一部关于茶的专著。",
        ],
    ),
    (
        "nature",
        "竹子",
        [
            "竹子属于禾本科，是世界上生长最快的植物之一。",
            "有些竹子一天能长高将近一米。",
            "许多竹子几十年才开一次花，开花后往往成片死亡。",
        ],
    ),
]

FACTS_ES: list[tuple[str, str, list[str]]] = [
    (
        "city",
        "Buenos Aires",
        [
            "Buenos Aires es la capital de Argentina y se encuentra a orillas del Río de la Plata.",
            "El tango nació en sus barrios portuarios a finales del siglo XIX.",
            "La avenida 9 de Julio es una de las más anchas del mundo.",
            "A sus habitantes se les llama porteños.",
        ],
    ),
    (
        "city",
        "Ciudad de México",
        [
            "La Ciudad de México se levanta sobre las ruinas de Tenochtitlan, la antigua capital azteca.",
            "Como está construida sobre un antiguo lago, algunas zonas se hunden poco a poco.",
            "Se encuentra a unos 2240 metros sobre el nivel del mar.",
            "El Zócalo es una de las plazas más grandes del continente americano.",
        ],
    ),
    (
        "city",
        "Sevilla",
        [
            "Sevilla es la capital de Andalucía y está atravesada por el río Guadalquivir.",
            "La Giralda, antiguo alminar de la mezquita, es hoy el campanario de la catedral.",
            "En verano, las temperaturas superan con frecuencia los 40 grados.",
            "La Feria de Abril llena la ciudad de casetas, música y trajes de flamenca.",
        ],
    ),
    (
        "city",
        "Lisboa",
        [
            "Lisboa es la capital de Portugal y se extiende sobre varias colinas junto al estuario del Tajo.",
            "Un terremoto seguido de un tsunami destruyó gran parte de la ciudad en 1755.",
            "Los tranvías amarillos siguen subiendo por las calles empinadas de la Alfama.",
        ],
    ),
    (
        "animal",
        "Ajolote",
        [
            "El ajolote es un anfibio originario de los canales y lagos del valle de México.",
            "A diferencia de otros anfibios, conserva sus branquias externas durante toda la vida.",
            "Puede regenerar patas, parte del corazón y otros órganos.",
            "En estado salvaje está en peligro crítico de extinción.",
        ],
    ),
    (
        "animal",
        "Colibrí",
        [
            "Los colibríes son aves diminutas que solo viven en América.",
            "Pueden quedarse suspendidos en el aire e incluso volar hacia atrás.",
            "Su corazón puede latir más de mil veces por minuto durante el vuelo.",
        ],
    ),
    (
        "animal",
        "Pulpo",
        [
            "El pulpo es un molusco marino con ocho brazos y sin esqueleto.",
            "Tiene tres corazones y sangre de color azul.",
            "Puede cambiar el color y la textura de su piel en menos de un segundo.",
            "Es famoso por resolver problemas y escaparse de los acuarios.",
        ],
    ),
    (
        "animal",
        "Lince ibérico",
        [
            "El lince ibérico es un felino que solo vive en la península ibérica.",
            "Se alimenta sobre todo de conejos.",
            "A principios de este siglo quedaban menos de cien ejemplares en libertad.",
            "Gracias a los programas de conservación, su población ha crecido de forma notable.",
        ],
    ),
    (
        "science",
        "Fotosíntesis",
        [
            "La fotosíntesis es el proceso por el que las plantas transforman la luz en energía química.",
            "Utiliza dióxido de carbono y agua y libera oxígeno.",
            "La clorofila absorbe sobre todo la luz roja y azul, y refleja la verde.",
        ],
    ),
    (
        "science",
        "Volcanes",
        [
            "Un volcán es una abertura de la corteza terrestre por la que salen lava, ceniza y gases.",
            "Las islas Canarias tienen origen volcánico.",
            "Con el tiempo, los suelos volcánicos pueden volverse muy fértiles.",
        ],
    ),
    (
        "food",
        "Paella",
        [
            "La paella es un plato de arroz originario de la Comunidad Valenciana.",
            "Se cocina en una sartén ancha y poco profunda que da nombre al plato.",
            "La receta valenciana tradicional lleva pollo, conejo y judías verdes.",
            "La capa de arroz tostado que queda en el fondo se llama socarrat.",
        ],
    ),
    (
        "food",
        "Tortilla de patatas",
        [
            "La tortilla de patatas es uno de los platos más populares de España.",
            "Se prepara con huevos, patatas y, según a quién se pregunte, cebolla.",
            "Las patatas se confitan a fuego lento en aceite de oliva antes de mezclarlas con el huevo.",
            "Se puede comer caliente o fría, y es habitual en bares como tapa.",
        ],
    ),
    (
        "food",
        "Gazpacho",
        [
            "El gazpacho es una sopa fría típica de Andalucía.",
            "Se elabora con tomate, pimiento, pepino, ajo, aceite de oliva y vinagre.",
            "Es muy popular en verano por ser fresco y ligero.",
        ],
    ),
    (
        "food",
        "Guacamole",
        [
            "El guacamole es una salsa mexicana a base de aguacate.",
            "Se prepara machacando aguacate maduro con lima, sal, cebolla, chile y cilantro.",
            "El zumo de lima ayuda a que no se oscurezca tan rápido.",
        ],
    ),
    (
        "history",
        "La imprenta",
        [
            "Johannes Gutenberg desarrolló la imprenta de tipos móviles metálicos hacia 1450.",
            "La imprenta abarató los libros y facilitó la difusión de las ideas en Europa.",
            "En China ya se habían usado tipos móviles de arcilla varios siglos antes.",
        ],
    ),
]

FACTS_FR: list[tuple[str, str, list[str]]] = [
    (
        "city",
        "Lyon",
        [
            "Lyon est située au confluent du Rhône et de la Saône.",
            "La ville a été fondée par les Romains sous le nom de Lugdunum.",
            "Elle est réputée pour sa gastronomie et ses bouchons, de petits restaurants traditionnels.",
            "Chaque mois de décembre, la Fête des Lumières illumine les façades de la ville.",
        ],
    ),
    (
        "city",
        "Marseille",
        [
            "Marseille, fondée par des marins grecs vers 600 avant notre ère, est l'une des plus anciennes villes "
            "de France.",
            "Son Vieux-Port est au cœur de la vie de la ville depuis plus de deux millénaires.",
            "La basilique Notre-Dame-de-la-Garde domine la ville depuis sa colline.",
            "La bouillabaisse, une soupe de poissons, en est le plat emblématique.",
        ],
    ),
    (
        "city",
        "Québec",
        [
            "La ville de Québec, fondée en 1608, est l'une des plus anciennes villes d'Amérique du Nord.",
            "Son quartier historique est inscrit au patrimoine mondial de l'UNESCO.",
            "Le Château Frontenac domine le fleuve Saint-Laurent.",
            "Chaque hiver, la ville accueille un grand carnaval.",
        ],
    ),
    (
        "animal",
        "Renard roux",
        [
            "Le renard roux est le carnivore sauvage le plus répandu dans le monde.",
            "Il s'est très bien adapté à la vie en ville.",
            "Sous la neige, il peut entendre les rongeurs se déplacer et bondir pour les attraper.",
        ],
    ),
    (
        "animal",
        "Manchot empereur",
        [
            "Le manchot empereur est le plus grand des manchots et ne se reproduit qu'en Antarctique.",
            "Le mâle couve l'œuf sur ses pattes pendant l'hiver austral, sans manger pendant environ deux mois.",
            "Serrés les uns contre les autres, les oiseaux résistent à des températures inférieures à moins 40 degrés.",
        ],
    ),
    (
        "animal",
        "Abeille domestique",
        [
            "Une colonie d'abeilles compte des dizaines de milliers d'ouvrières et une seule reine.",
            "Les ouvrières indiquent l'emplacement des fleurs grâce à une danse frétillante.",
            "Les abeilles pollinisent de nombreuses cultures de fruits et de légumes.",
        ],
    ),
    (
        "science",
        "Arc-en-ciel",
        [
            "Un arc-en-ciel se forme lorsque la lumière du Soleil est réfractée et réfléchie dans les gouttes de pluie.",
            "Les couleurs apparaissent toujours dans le même ordre, du rouge à l'extérieur au violet à l'intérieur.",
            "Pour voir un arc-en-ciel, il faut avoir le Soleil dans le dos.",
        ],
    ),
    (
        "science",
        "La Lune",
        [
            "La Lune est le seul satellite naturel de la Terre.",
            "Elle présente toujours la même face à la Terre.",
            "Son attraction est la principale cause des marées.",
            "Douze astronautes ont marché sur la Lune entre 1969 et 1972.",
        ],
    ),
    (
        "science",
        "Le son",
        [
            "Le son est une vibration qui se propage dans l'air, l'eau ou les solides.",
            "Dans l'air, à température ambiante, il se déplace à environ 343 mètres par seconde.",
            "Le son ne se propage pas dans le vide.",
        ],
    ),
    (
        "history",
        "La pierre de Rosette",
        [
            "La pierre de Rosette porte un même décret gravé en trois écritures.",
            "Elle a été découverte en 1799 près de la ville de Rosette, en Égypte.",
            "Jean-François Champollion s'en est servi pour déchiffrer les hiéroglyphes en 1822.",
        ],
    ),
    (
        "history",
        "Le pont du Gard",
        [
            "Le pont du Gard est un pont-aqueduc romain situé dans le sud de la France.",
            "Il faisait partie d'un aqueduc de près de 50 kilomètres qui alimentait la ville de Nîmes.",
            "L'ouvrage, haut d'environ 49 mètres, est construit sur trois niveaux d'arches.",
        ],
    ),
    (
        "food",
        "Ratatouille",
        [
            "La ratatouille est un plat de légumes originaire de Provence.",
            "Elle réunit tomates, aubergines, courgettes, poivrons, oignons et ail.",
            "Certains cuisiniers font revenir chaque légume séparément avant de les réunir.",
            "Elle se déguste chaude ou froide, et elle est souvent meilleure le lendemain.",
        ],
    ),
    (
        "food",
        "Les crêpes",
        [
            "La pâte à crêpes se prépare avec de la farine, des œufs, du lait et une pincée de sel.",
            "Laisser reposer la pâte une heure la rend plus souple.",
            "En Bretagne, on distingue les crêpes sucrées et les galettes de sarrasin.",
        ],
    ),
    (
        "food",
        "La baguette",
        [
            "La baguette est un pain long et fin, emblématique de la boulangerie française.",
            "Une baguette traditionnelle ne contient que de la farine, de l'eau, du sel et du levain ou de la levure.",
            "Son savoir-faire artisanal a été inscrit au patrimoine culturel immatériel de l'UNESCO en 2022.",
        ],
    ),
]

FACTS_DE: list[tuple[str, str, list[str]]] = [
    (
        "city",
        "Hamburg",
        [
            "Hamburg ist die zweitgrößte Stadt Deutschlands und liegt an der Elbe.",
            "Der Hamburger Hafen gehört zu den größten Häfen Europas.",
            "Die Speicherstadt ist der größte historische Lagerhauskomplex der Welt.",
            "In der Stadt gibt es mehr Brücken als in Venedig und Amsterdam zusammen.",
        ],
    ),
    (
        "city",
        "Wien",
        [
            "Wien ist die Hauptstadt Österreichs und liegt an der Donau.",
            "Die Wiener Kaffeehauskultur steht seit 2011 auf der österreichischen Liste des immateriellen Kulturerbes.",
            "Schloss Schönbrunn war die Sommerresidenz der Habsburger.",
            "In Wien wird seit Jahrhunderten Wein angebaut, sogar innerhalb der Stadtgrenzen.",
        ],
    ),
    (
        "city",
        "Berlin",
        [
            "Berlin ist die Hauptstadt Deutschlands und mit rund 3,8 Millionen Einwohnern die größte Stadt des Landes.",
            "Von 1961 bis 1989 teilte die Berliner Mauer die Stadt in Ost und West.",
            "Das Brandenburger Tor wurde Ende des 18. Jahrhunderts errichtet.",
            "Rund ein Viertel der Stadtfläche besteht aus Wald und Gewässern.",
        ],
    ),
    (
        "animal",
        "Rotfuchs",
        [
            "Der Rotfuchs ist das am weitesten verbreitete Raubtier der Welt.",
            "Viele Füchse leben inzwischen mitten in Städten.",
            "Im Schnee hört er Mäuse unter der Oberfläche und fängt sie mit einem Sprung.",
        ],
    ),
    (
        "animal",
        "Honigbiene",
        [
            "Ein Bienenvolk besteht aus einer Königin und zehntausenden Arbeiterinnen.",
            "Mit dem Schwänzeltanz teilen Bienen einander mit, wo es Nahrung gibt.",
            "Für ein Kilogramm Honig fliegen Bienen Millionen von Blüten an.",
        ],
    ),
    (
        "animal",
        "Feuersalamander",
        [
            "Der Feuersalamander ist an seiner schwarz-gelben Färbung leicht zu erkennen.",
            "Er lebt in feuchten Laubwäldern und ist vor allem nachts und bei Regen unterwegs.",
            "Seine Hautdrüsen geben ein Gift ab, das ihn vor Fressfeinden schützt.",
        ],
    ),
    (
        "science",
        "Plattentektonik",
        [
            "Nach der Theorie der Plattentektonik besteht die Erdkruste aus großen Platten, die sich langsam bewegen.",
            "Die Platten verschieben sich um wenige Zentimeter pro Jahr.",
            "Alfred Wegener stellte bereits 1912 die Idee der Kontinentalverschiebung vor.",
            "Erdbeben und Vulkane häufen sich an den Plattengrenzen.",
        ],
    ),
    (
        "science",
        "DNA",
        [
            "Die DNA trägt die Erbinformation aller bekannten Lebewesen.",
            "Ihre Doppelhelix-Struktur wurde 1953 beschrieben.",
            "Das menschliche Erbgut umfasst etwa drei Milliarden Basenpaare.",
        ],
    ),
    (
        "science",
        "Regenbogen",
        [
            "Ein Regenbogen entsteht, wenn Sonnenlicht in Regentropfen gebrochen und reflektiert wird.",
            "Die Farben erscheinen immer in derselben Reihenfolge, außen Rot und innen Violett.",
            "Man sieht einen Regenbogen nur, wenn man die Sonne im Rücken hat.",
        ],
    ),
    (
        "history",
        "Der Buchdruck",
        [
            "Johannes Gutenberg entwickelte um 1450 in Mainz den Buchdruck mit beweglichen Metalllettern.",
            "Die Gutenberg-Bibel gilt als eines der ersten großen gedruckten Bücher Europas.",
            "Der Buchdruck machte Bücher billiger und half, neue Ideen schnell zu verbreiten.",
        ],
    ),
    (
        "history",
        "Der Mauerfall",
        [
            "Am Abend des 9. November 1989 öffneten sich die Grenzübergänge in Berlin.",
            "Auslöser war eine missverständliche Ankündigung neuer Reiseregelungen.",
            "Am 3. Oktober 1990 wurde Deutschland wiedervereinigt.",
        ],
    ),
    (
        "food",
        "Sauerteigbrot",
        [
            "Sauerteigbrot wird mit einem Ansatz aus wilden Hefen und Milchsäurebakterien gelockert.",
            "Der Sauerteig muss regelmäßig mit Mehl und Wasser gefüttert werden.",
            "Die lange Gärung sorgt für den leicht säuerlichen Geschmack.",
        ],
    ),
    (
        "food",
        "Brezel",
        [
            "Die Brezel ist ein Laugengebäck, das vor allem in Süddeutschland beliebt ist.",
            "Ihre typische braune Kruste entsteht durch ein kurzes Bad in Natronlauge vor dem Backen.",
            "Traditionell wird sie mit grobem Salz bestreut.",
        ],
    ),
    (
        "food",
        "Spätzle",
        [
            "Spätzle sind eine Teigware aus Mehl, Eiern, Wasser und Salz, typisch für Schwaben.",
            "Der Teig wird vom Brett geschabt oder durch eine Presse direkt ins kochende Wasser gedrückt.",
            "Mit Käse und Röstzwiebeln überbacken heißen sie Käsespätzle.",
        ],
    ),
]

FACTS = {"en": FACTS_EN, "zh": FACTS_ZH, "es": FACTS_ES, "fr": FACTS_FR, "de": FACTS_DE}

FACT_TITLES = {
    "en": {
        "city": ["{n}", "{n} at a glance", "About {n}", "City profile: {n}"],
        "animal": ["{n}", "Animal facts: {n}", "{n}: did you know?"],
        "science": ["{n}", "{n}, explained", "Science basics: {n}"],
        "history": ["{n}", "History: {n}", "A short history: {n}"],
        "food": ["{n}", "Kitchen notes: {n}", "Food: {n}"],
        "nature": ["{n}", "Nature notes: {n}"],
        "technology": ["{n}", "Inventions: {n}"],
    },
    "zh": {
        "city": ["{n}", "城市简介：{n}", "走进{n}"],
        "animal": ["{n}", "动物小知识：{n}", "你了解{n}吗？"],
        "science": ["{n}", "科学常识：{n}", "什么是{n}？"],
        "history": ["{n}", "历史上的{n}", "历史小故事：{n}"],
        "food": ["{n}", "美食：{n}", "厨房笔记：{n}"],
        "nature": ["{n}", "自然笔记：{n}"],
    },
    "es": {
        "city": ["{n}", "{n} en pocas palabras", "Ciudades: {n}"],
        "animal": ["{n}", "Fauna: {n}", "Curiosidades: {n}"],
        "science": ["{n}", "Ciencia: {n}"],
        "history": ["{n}", "Historia: {n}"],
        "food": ["{n}", "Cocina: {n}", "Recetas: {n}"],
    },
    "fr": {
        "city": ["{n}", "{n} en bref", "Villes : {n}"],
        "animal": ["{n}", "Faune : {n}", "Le saviez-vous ? {n}"],
        "science": ["{n}", "Sciences : {n}"],
        "history": ["{n}", "Histoire : {n}"],
        "food": ["{n}", "Cuisine : {n}"],
    },
    "de": {
        "city": ["{n}", "{n} im Porträt", "Städte: {n}"],
        "animal": ["{n}", "Tierwelt: {n}", "Wissenswertes: {n}"],
        "science": ["{n}", "Wissenschaft: {n}", "Kurz erklärt: {n}"],
        "history": ["{n}", "Geschichte: {n}"],
        "food": ["{n}", "Küche: {n}"],
    },
}


# ---------------------------------------------------------------------------
# Corpus: news-style snippets (fictional towns, people and companies)
# ---------------------------------------------------------------------------
# Every kind has variants; a variant has title templates, lead templates and groups of
# follow-up templates (a document uses the lead plus a few groups, in order).  Slot values
# come from the per-language lexicon LEX via the _slots_* functions further below.

_FIRST_EN = [
    "Maria",
    "James",
    "Aisha",
    "Daniel",
    "Priya",
    "Tom",
    "Elena",
    "Samuel",
    "Grace",
    "Omar",
    "Hannah",
    "Lucas",
    "Mei",
    "Carlos",
    "Fatima",
    "Peter",
    "Nora",
    "Kwame",
    "Sofia",
    "Ben",
]
_LAST_EN = [
    "Okafor",
    "Jensen",
    "Patel",
    "Moreau",
    "Lindqvist",
    "Hughes",
    "Nakamura",
    "Alvarez",
    "Brennan",
    "Kowalski",
    "Adeyemi",
    "Walsh",
    "Chen",
    "Fischer",
    "Rossi",
    "Osei",
    "Novak",
    "Reyes",
    "Hart",
    "Doyle",
]

LEX: dict[str, dict] = {
    "en": {
        "towns": [
            "Millbrook",
            "Ashford",
            "Riverton",
            "Eastwick",
            "Harlow Bay",
            "Pinecrest",
            "Oakdale",
            "Lakeside",
            "Northfield",
            "Cedar Falls",
            "Brambleton",
            "Westport",
            "Stonebridge",
            "Fairhaven",
            "Kingsmere",
            "Elmstead",
            "Redcliff",
            "Willowby",
            "Marston",
            "Greyhaven",
        ],
        "people": [f"{a} {b}" for a, b in zip(_FIRST_EN, _LAST_EN, strict=True)]
        + [f"{a} {b}" for a, b in zip(_FIRST_EN, _LAST_EN[7:] + _LAST_EN[:7], strict=True)],
        "weekdays": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
        "months": [
            "January",
            "February",
            "March",
            "April",
            "May",
            "June",
            "July",
            "August",
            "September",
            "October",
            "November",
            "December",
        ],
        "facilities": [
            ("a new public library", "the new library", "new library"),
            ("an indoor swimming pool", "the pool", "swimming pool"),
            ("a footbridge over the river", "the footbridge", "river footbridge"),
            ("a network of protected bike lanes", "the bike lanes", "bike lane network"),
            ("a new community centre", "the community centre", "community centre"),
            ("a skate park", "the skate park", "skate park"),
            ("a solar farm on the old landfill site", "the solar farm", "solar farm"),
            ("a flood barrier along the harbour", "the flood barrier", "flood barrier"),
            ("a covered market hall", "the market hall", "market hall"),
            ("a new primary school", "the school", "primary school"),
        ],
        "concerns": [
            "traffic during construction",
            "noise",
            "the loss of parking spaces",
            "rising costs",
            "the impact on nearby wetlands",
            "how the facility will be maintained",
        ],
        "alts": ["road repairs", "affordable housing", "schools", "public transport"],
        "council_quotes": [
            "This is a long-awaited investment in our community",
            "Families here have been asking for this for years",
            "It will make the town a better place to live for everyone",
            "We listened to residents and changed the plans twice",
        ],
        "short_quotes": ["a good day for {town}", "long overdue", "a smart investment"],
        "regions": [
            "the northern valleys",
            "the coast",
            "the capital region",
            "the lake district",
            "the eastern plains",
            "the mountain passes",
        ],
        "seasons": {
            "winter": (
                "winter",
                ["heavy snow", "freezing rain", "a sharp cold snap", "icy fog"],
                [
                    "allow extra time and carry warm clothing",
                    "avoid the mountain passes if possible",
                    "watch out for black ice on bridges",
                ],
            ),
            "spring": (
                "spring",
                ["heavy showers", "strong gusty winds", "a mix of sun and rain", "late frost"],
                ["take care on exposed roads", "watch out for fallen branches"],
            ),
            "summer": (
                "summer",
                ["a heatwave", "afternoon thunderstorms", "hot and sunny weather", "humid, sticky air"],
                [
                    "carry water and avoid long drives in the afternoon heat",
                    "check on elderly neighbours during the hottest hours",
                ],
            ),
            "autumn": (
                "autumn",
                ["persistent rain", "dense morning fog", "the first storm of the season", "strong winds"],
                ["slow down and keep a safe distance", "watch out for standing water on rural roads"],
            ),
        },
        "dirs": ["north", "south", "east", "west", "north-west", "south-west"],
        "improve": [
            "skies are expected to clear",
            "temperatures return to seasonal levels",
            "a drier air mass moves in",
        ],
        "cmp": ["warmer", "colder", "wetter", "drier"],
        "teams": [
            "Riverton Rovers",
            "Ashford Athletic",
            "Millbrook United",
            "Oakdale Otters",
            "Harlow Bay Harriers",
            "Pinecrest Panthers",
            "Northfield Falcons",
            "Westport Wanderers",
            "Cedar Falls City",
            "Stonebridge Town",
        ],
        "excuses": [
            "simply not been sharp enough",
            "created chances but failed to finish them",
            "paid for two costly mistakes",
            "run out of energy in the second half",
        ],
        "dayparts": ["afternoon", "evening", "night"],
        "companies": [
            "Northwind Foods",
            "Bluepeak Software",
            "Harbor Logistics",
            "Greenline Energy",
            "Copperleaf Furniture",
            "Silverbrook Textiles",
            "Meridian Bikes",
            "Lumen Optics",
            "Tidewater Shipping",
            "Brightfield Dairy",
            "Kestrel Robotics",
            "Oakridge Paper",
        ],
        "quarters": ["first", "second", "third", "fourth"],
        "drivers": [
            "strong demand for its new product line",
            "higher prices and steady export orders",
            "a busy holiday season",
            "growing sales in Asia",
            "a large contract with a public customer",
        ],
        "headwinds": [
            "customers cut back on spending",
            "a mild winter reduced demand",
            "higher energy costs weighed on margins",
            "delays at a key supplier held back production",
        ],
        "ceo_up": [
            "keep investing in new products",
            "focus on quality rather than volume",
            "open two more sites next year",
        ],
        "ceo_down": [
            "cut costs without cutting jobs",
            "come back stronger next year",
            "review every part of the business",
        ],
        "events": [
            ("the annual jazz festival", "Jazz festival"),
            ("the spring book fair", "Book fair"),
            ("the night food market", "Night food market"),
            ("the lantern parade", "Lantern parade"),
            ("the short film festival", "Short film festival"),
            ("the harvest fair", "Harvest fair"),
            ("the city half marathon", "Half marathon"),
            ("the open-air theatre season", "Open-air theatre"),
            ("the children's science fair", "Science fair"),
            ("the summer flower show", "Flower show"),
        ],
        "event_quotes": [
            "We have more local volunteers than ever before",
            "Our goal is to make this a weekend for the whole family",
            "It takes a whole year to put this together, and it's worth it",
            "We kept ticket prices the same as last year on purpose",
        ],
        "univs": ["the University of {town}", "the {town} Institute of Technology", "{town} University"],
        "sci_quotes": [
            "We were surprised by how consistent the effect was",
            "This opens up a lot of new questions",
            "It's a small step, but an important one",
            "We now want to see whether this holds outside the lab",
        ],
        "findings": [
            (
                "Bees learn shapes quickly",
                "honeybees can learn to tell simple shapes apart after only a few rounds of training",
                "In the experiments, bees were rewarded with sugar water for picking the right shape.",
                "The researchers note that the tests took place in a controlled setting, not in the wild.",
            ),
            (
                "Street trees keep neighbourhoods cooler",
                "streets lined with mature trees can be several degrees cooler on summer afternoons",
                "The team measured surface temperatures on dozens of streets over two summers.",
                "The size of the effect depended strongly on the type of tree and the width of the street.",
            ),
            (
                "Crows remember faces for years",
                "crows remember people they associate with danger for several years",
                "Volunteers wearing masks were used to test how the birds reacted over time.",
                "It is not yet clear how the birds pass this knowledge on to each other.",
            ),
            (
                "Seagrass meadows store carbon",
                "seagrass meadows store large amounts of carbon in the sediment beneath them",
                "Core samples were taken from meadows along the coast.",
                "Damaged meadows can release that carbon again, the authors warn.",
            ),
            (
                "Old bottles could end up in new buildings",
                "finely ground recycled glass can replace part of the sand used in concrete",
                "Test blocks made with the mixture were as strong as ordinary concrete after a month.",
                "Long-term durability still needs to be tested outdoors.",
            ),
            (
                "Old mine shafts as giant batteries",
                "old mine shafts could store energy by raising and lowering heavy weights",
                "The weights would be lifted when electricity is cheap and lowered to generate power when needed.",
                "So far the team has only tested a small prototype.",
            ),
            (
                "Sleep helps new words stick",
                "a good night's sleep helps people remember new vocabulary",
                "Participants learned words in an unfamiliar language and were tested the next morning.",
                "The study was small, with fewer than a hundred volunteers.",
            ),
            (
                "Protected bike lanes bring more cyclists",
                "protected bike lanes led to more people cycling without slowing down car traffic",
                "Traffic counts were compared before and after new lanes opened in several districts.",
                "The authors say the results may differ in hillier cities.",
            ),
            (
                "Some corals bounce back after bleaching",
                "some corals can recover from bleaching if water temperatures drop quickly",
                "Divers checked tagged colonies every month for two years.",
                "Repeated heat waves leave the reefs less time to recover.",
            ),
            (
                "Plastic particles reach remote mountains",
                "rain and snow carry tiny plastic particles even to remote mountain areas",
                "Samples were collected at high-altitude weather stations over a full year.",
                "The effects of such small particles on wildlife are still poorly understood.",
            ),
            (
                "Soil is teeming with life",
                "a teaspoon of healthy soil can contain more than a billion bacteria",
                "The team sampled soils from farms, forests and city parks.",
                "Soils from intensively farmed fields were noticeably less diverse.",
            ),
            (
                "Migrating birds use the magnetic field",
                "young songbirds use the Earth's magnetic field to find their way on their first migration",
                "Birds fitted with tiny trackers were followed on their journey south.",
                "How exactly the birds sense the field is still debated.",
            ),
        ],
        "causes": [
            ("a signal fault near {town2}", "signal fault"),
            ("a fallen tree on the tracks", "fallen tree"),
            ("a broken-down train", "train breakdown"),
            ("a power failure at the central station", "power cut"),
        ],
        "apologies": [
            "We apologise to everyone whose journey was disrupted",
            "Our engineers worked through the night to fix the problem",
            "Safety always comes first, even if that means delays",
        ],
        "roads": ["Mill Road", "the river road", "Station Street", "the old coast road", "Queen's Avenue"],
        "cleanup_quotes": [
            "It's great to see so many young people here",
            "Every bag we fill is one less bag in the sea",
            "We'll keep coming back until the riverbanks stay clean",
        ],
        "kid_quotes": [
            "The children check on the plants every single morning",
            "Some of them had never seen a potato growing before",
            "They argue about whose sunflower is tallest",
        ],
    },
}

NEWS: dict[str, dict[str, dict[str, dict[str, list]]]] = {
    "en": {
        "council": {
            "main": {
                "titles": [
                    "{town} council approves {fac_bare}",
                    "{town} to get {fac_a} by {year}",
                    "Green light for {fac_bare} in {town}",
                    "Council vote clears way for {fac_bare} in {town}",
                ],
                "lead": [
                    "The {town} city council voted {yes} to {no} on {weekday} to approve {fac_a}.",
                    "{town} will get {fac_a} after council members approved the plan on {weekday} evening.",
                    "After months of debate, the council in {town} has given the green light to {fac_a}.",
                ],
                "groups": [
                    [
                        "The project is expected to cost about ${cost} million and should be finished by {season} {year}.",
                        "Construction is scheduled to begin in {month}, and the work should take around {n_months} months.",
                        "Most of the money will come from the regional government, with the town covering the rest.",
                    ],
                    [
                        '"{council_quote}," said {person}, who chairs the planning committee.',
                        '{person}, the mayor, called the decision "{short_quote}".',
                    ],
                    [
                        "Some residents have raised concerns about {concern}.",
                        "Opponents argued that the money would be better spent on {alt}.",
                        "A public information session on {fac_the} will be held at the town hall next {weekday2}.",
                    ],
                ],
            }
        },
        "weather": {
            "main": {
                "titles": [
                    "{cond_cap} expected across {region}",
                    "Weather: {cond} on the way for {weekday}",
                    "Forecast for {weekday}: {cond} in {region}",
                ],
                "lead": [
                    "Forecasters expect {cond} across {region} on {weekday}, with temperatures between {lo} and "
                    "{hi} degrees Celsius.",
                    "Expect {cond} in {region} this {weekday}, with highs of around {hi} degrees.",
                ],
                "groups": [
                    [
                        "Winds from the {dir} could gust up to {gust} km/h in exposed areas.",
                        "Winds should stay fairly light for most of the day.",
                    ],
                    [
                        "Drivers are advised to {advice}.",
                        "The weather service has issued a yellow warning for parts of {region}.",
                    ],
                    [
                        "Conditions should improve by {weekday2}, when {improve}.",
                        "This {season} has so far been {cmp} than average, according to the regional weather service.",
                    ],
                ],
            }
        },
        "sports": {
            "win": {
                "titles": [
                    "{winner} beat {loser} {s1}-{s2}",
                    "{winner} too strong for {loser}",
                    "{scorer} on target as {winner} beat {loser}",
                ],
                "lead": [
                    "{winner} beat {loser} {s1}-{s2} on {weekday} {daypart} in front of {crowd} fans.",
                    "A goal from {scorer} helped {winner} to a {s1}-{s2} win over {loser} on {weekday}.",
                ],
                "groups": [
                    [
                        "{scorer} opened the scoring after {minute} minutes.",
                        "{loser} had more of the ball but struggled to create clear chances.",
                    ],
                    [
                        "The result moves {winner} up to {pos} place in the table.",
                        "{winner} have now won {streak} games in a row.",
                    ],
                    [
                        '{loser} coach {coach} said the team had "{excuse}".',
                        "{winner} travel to {other} next weekend.",
                    ],
                ],
            },
            "draw": {
                "titles": [
                    "{home} and {away} share the points",
                    "Stalemate as {home} and {away} draw {s1}-{s2}",
                ],
                "lead": ["{home} and {away} drew {s1}-{s2} on {weekday} {daypart} in front of {crowd} fans."],
                "groups": [
                    [
                        "Both sides had chances to win it in a lively second half.",
                        "Neither goalkeeper had much to do in a cautious first half.",
                    ],
                    [
                        "The draw leaves {home} in {pos} place.",
                        "{away} are still without a win in their last {streak} matches.",
                    ],
                    ['{home} coach {coach} said the team had "{excuse}".'],
                ],
            },
        },
        "business": {
            "up": {
                "titles": [
                    "{company} revenue up {pct}% in {quarter} quarter",
                    "{company} beats expectations",
                    "{company} to hire {jobs} in {town}",
                ],
                "lead": [
                    "{company} reported a {pct}% rise in revenue for the {quarter} quarter, helped by {driver}.",
                    "Revenue at {company} grew {pct}% in the {quarter} quarter thanks to {driver}.",
                ],
                "groups": [
                    [
                        "The company plans to hire {jobs} new employees at its site in {town}.",
                        "It also raised its outlook for the full year.",
                    ],
                    ['Chief executive {person} said the company would "{ceo_up}".'],
                    ["Shares rose {pct2}% in early trading."],
                ],
            },
            "down": {
                "titles": [
                    "{company} revenue falls {pct}%",
                    "{company} cuts forecast after weak {quarter} quarter",
                ],
                "lead": [
                    "{company} said revenue fell {pct}% in the {quarter} quarter as {headwind}.",
                    "Revenue at {company} dropped {pct}% in the {quarter} quarter after {headwind}.",
                ],
                "groups": [
                    [
                        "The company said it would delay a planned expansion in {town}.",
                        "It now expects full-year sales to be roughly flat.",
                    ],
                    ['Chief executive {person} said the company would "{ceo_down}".'],
                    ["Shares fell {pct2}% in early trading."],
                ],
            },
        },
        "science": {
            "main": {
                "titles": ["{ftitle}", "Research news: {ftitle_lc}"],
                "lead": [
                    "Researchers at {univ} report that {finding}.",
                    "A new study from {univ} suggests that {finding}.",
                    "{finding_cap}, according to researchers at {univ}.",
                ],
                "groups": [
                    ["{detail}"],
                    ['"{sci_quote}," said lead author {person}.'],
                    ["{caveat}", "The team now plans to repeat the work on a larger scale."],
                ],
            }
        },
        "events": {
            "main": {
                "titles": [
                    "{event_title} returns to {town}",
                    "{event_title}: what to know before you go",
                    "{town} gets ready for {event}",
                ],
                "lead": [
                    "{event_cap} returns to {town} this weekend.",
                    "{town} is getting ready for {event}, which opens on {weekday}.",
                    "Organisers expect around {visitors} visitors at {event} in {town} this year.",
                ],
                "groups": [
                    [
                        "Tickets cost ${price} for adults, and children under twelve get in free.",
                        "Entry is free, although some workshops must be booked in advance.",
                    ],
                    [
                        "Several streets in the old town will be closed to traffic from {hour} a.m.",
                        "Extra buses will run from the train station throughout the weekend.",
                    ],
                    [
                        '"{event_quote}," said organiser {person}.',
                        "Last year's edition drew a record crowd despite the rain.",
                    ],
                ],
            }
        },
        "transport": {
            "delay": {
                "titles": [
                    "Delays on Line {line} after {cause_short}",
                    "Morning commute disrupted on Line {line}",
                ],
                "lead": [
                    "Passengers on Line {line} faced delays of up to {mins} minutes on {weekday} morning after {cause}."
                ],
                "groups": [
                    [
                        "The operator said services were back to normal by early afternoon.",
                        "Replacement buses ran between {town} and {town2} for several hours.",
                    ],
                    ['"{apology}," a spokesperson said.'],
                    ["Passengers can claim a partial refund through the operator's website."],
                ],
            },
            "route": {
                "titles": ["New bus route links {town} and {town2}", "Direct bus between {town} and {town2}"],
                "lead": [
                    "A new bus route connecting {town} with {town2} starts running in {month}.",
                    "From {month}, residents of {town} will be able to take a direct bus to {town2}.",
                ],
                "groups": [
                    [
                        "Buses will run every {freq} minutes during the day and hourly in the evening.",
                        "The journey will take about {mins} minutes.",
                    ],
                    [
                        "Local businesses had campaigned for the connection for years.",
                        "The route will be served by electric buses.",
                    ],
                    ["Tickets will cost the same as on existing routes."],
                ],
            },
            "closure": {
                "titles": ["Bridge on {road} closed for repairs", "{road} bridge to close for {weeks} weeks"],
                "lead": [
                    "The bridge carrying {road} over the river in {town} will close for {weeks} weeks from "
                    "{month} for urgent repairs."
                ],
                "groups": [
                    [
                        "Drivers will be diverted via {town2}, adding around {mins} minutes to the journey.",
                        "Pedestrians and cyclists will still be able to cross on a temporary walkway.",
                    ],
                    ["Inspectors found corrosion in several steel supports during a routine check last year."],
                    ["The work is expected to cost around ${cost} million."],
                ],
            },
        },
        "community": {
            "cleanup": {
                "titles": [
                    "Volunteers collect {kg} kg of litter along the river",
                    "{town} riverbank clean-up",
                ],
                "lead": [
                    "More than {n} volunteers spent {weekday} morning cleaning up the riverbanks in {town}, "
                    "collecting around {kg} kilograms of litter."
                ],
                "groups": [
                    [
                        "Among the more unusual finds were a shopping trolley, a bicycle wheel and an old typewriter.",
                        "Most of the rubbish was plastic packaging and drink cans.",
                    ],
                    ['"{cleanup_quote}," said organiser {person}.'],
                    ["The next clean-up is planned for {month}."],
                ],
            },
            "library": {
                "titles": ["{town} library extends opening hours", "Later opening hours at {town} library"],
                "lead": [
                    "The public library in {town} will stay open until {hour_pm} p.m. on weekdays from next month."
                ],
                "groups": [
                    [
                        "The change follows a survey in which many residents said they could not visit during "
                        "working hours.",
                        "The library will also open on Sunday afternoons.",
                    ],
                    ["Staff say visitor numbers have grown steadily since the reading café opened last year."],
                    ["Membership remains free for all residents."],
                ],
            },
            "garden": {
                "titles": [
                    "Pupils plant vegetable garden at {town} school",
                    "A school garden grows in {town}",
                ],
                "lead": [
                    "Pupils at a primary school in {town} have turned an unused corner of the playground into "
                    "a vegetable garden."
                ],
                "groups": [
                    [
                        "The children planted potatoes, beans, lettuce and sunflowers.",
                        "Parents helped build raised beds from recycled wood.",
                    ],
                    ['"{kid_quote}," said teacher {person}.'],
                    ["The first harvest will be cooked in the school kitchen in the autumn."],
                ],
            },
            "repair": {
                "titles": [
                    "Repair café in {town} marks {n_ord} session",
                    "Fix it, don't bin it: {town} repair café",
                ],
                "lead": [
                    "The repair café in {town} held its {n_ord} session on Saturday, fixing toasters, lamps, "
                    "bicycles and clothes for free."
                ],
                "groups": [
                    [
                        "Volunteers say they manage to repair roughly two out of three items.",
                        "Visitors can sit with the volunteers and learn to fix things themselves.",
                    ],
                    ["The café meets on the first Saturday of every month at the community centre."],
                ],
            },
        },
    },
}

LEX["zh"] = {
    "towns": [
        "临江市",
        "青川县",
        "云溪镇",
        "南湖区",
        "白石县",
        "东港市",
        "松岭镇",
        "柳河县",
        "安平市",
        "望山镇",
    ],
    "people": [
        "王海峰",
        "李晓梅",
        "陈志远",
        "刘佳",
        "张伟",
        "赵敏",
        "周建国",
        "孙丽",
        "黄磊",
        "吴静",
        "郭涛",
        "何雪",
    ],
    "weekdays": ["周一", "周二", "周三", "周四", "周五", "周六", "周日"],
    "months": [f"{i}月" for i in range(1, 13)],
    "facilities": [
        ("图书馆",) * 3,
        ("室内游泳馆",) * 3,
        ("人行天桥",) * 3,
        ("自行车专用道",) * 3,
        ("社区活动中心",) * 3,
        ("公立幼儿园",) * 3,
        ("光伏电站",) * 3,
        ("农贸市场",) * 3,
    ],
    "concerns": ["施工期间的噪音和交通问题", "周边停车位减少", "工程预算超支"],
    "council_quotes": [
        "这是一件惠及全体市民的好事",
        "我们会确保工程质量和进度",
        "这个项目市民已经期盼多年了",
    ],
    "regions": ["北部山区", "沿海地区", "全市", "东部平原", "城区"],
    "seasons": {
        "winter": ("冬季", ["大雪", "冻雨", "寒潮天气"], ["注意行车安全，减速慢行", "尽量避免走山区道路"]),
        "spring": ("春季", ["阵雨", "大风", "沙尘天气"], ["关好门窗，出行注意安全"]),
        "summer": ("夏季", ["高温天气", "雷阵雨", "强降雨"], ["避免在午后高温时段长途驾驶", "注意防暑降温"]),
        "autumn": ("秋季", ["大雾", "持续阴雨", "大风降温"], ["出门前关注路况信息", "雾天开车打开雾灯"]),
    },
    "improve": ["气温将逐渐回升", "云层逐渐散开，天气转晴", "降雨明显减少"],
    "teams": ["临江队", "青川队", "云溪队", "南湖队", "白石队", "东港队", "松岭队", "柳河队"],
    "excuses": ["把握机会的能力还有待提高", "下半场体能下降明显", "两次失误葬送了比赛"],
    "companies": [
        "北辰食品",
        "蓝峰软件",
        "海港物流",
        "绿源能源",
        "铜叶家具",
        "银溪纺织",
        "远航自行车",
        "青禾乳业",
    ],
    "quarters": ["一", "二", "三", "四"],
    "drivers": ["新产品销售火爆", "出口订单稳定增长", "节假日消费旺盛", "海外市场拓展顺利"],
    "headwinds": ["原材料价格上涨", "海外需求放缓", "行业竞争加剧"],
    "ceo_up": ["加大研发投入", "提升产品质量", "扩大海外市场"],
    "ceo_down": ["控制成本，稳住就业", "优化产品结构"],
    "events": [
        ("音乐节", "音乐节"),
        ("书展", "书展"),
        ("美食节", "美食节"),
        ("灯会", "灯会"),
        ("电影节", "电影节"),
        ("半程马拉松", "半程马拉松"),
        ("花展", "花展"),
        ("农民丰收节", "农民丰收节"),
    ],
    "event_quotes": [
        "今年的志愿者人数是历年最多的",
        "我们希望这是一个适合全家参与的周末",
        "为了这次活动，我们准备了整整一年",
    ],
}

LEX["es"] = {
    "towns": [
        "Villanueva del Río",
        "San Esteban",
        "Puerto Claro",
        "Valdemora",
        "Riofrío",
        "Castellar",
        "Santa Olalla",
        "Peñalba",
        "Aguasvivas",
        "Monteluz",
    ],
    "people": [
        "Lucía Romero",
        "Javier Ortega",
        "Carmen Delgado",
        "Andrés Molina",
        "Marta Vidal",
        "Sergio Navarro",
        "Elena Castro",
        "Pablo Herrera",
        "Rosa Iglesias",
        "Diego Campos",
    ],
    "weekdays": [
        "el lunes",
        "el martes",
        "el miércoles",
        "el jueves",
        "el viernes",
        "el sábado",
        "el domingo",
    ],
    "months": [
        "enero",
        "febrero",
        "marzo",
        "abril",
        "mayo",
        "junio",
        "julio",
        "agosto",
        "septiembre",
        "octubre",
        "noviembre",
        "diciembre",
    ],
    "facilities": [
        ("una nueva biblioteca", "la nueva biblioteca", "nueva biblioteca"),
        ("una piscina cubierta", "la piscina cubierta", "piscina cubierta"),
        ("una pasarela peatonal sobre el río", "la pasarela", "pasarela peatonal"),
        ("una red de carriles bici", "la red de carriles bici", "red de carriles bici"),
        ("una escuela infantil", "la escuela infantil", "escuela infantil"),
        ("una planta solar", "la planta solar", "planta solar"),
        ("una nueva estación de autobuses", "la estación de autobuses", "estación de autobuses"),
    ],
    "concerns": [
        "las molestias de las obras",
        "la pérdida de plazas de aparcamiento",
        "que el presupuesto se dispare",
    ],
    "alts": ["arreglar las calles", "vivienda asequible", "mejorar el transporte público"],
    "council_quotes": [
        "Es una inversión que el municipio llevaba años esperando",
        "Esto mejorará la vida de todas las familias",
        "Hemos escuchado a los vecinos",
    ],
    "regions": [
        "el norte de la provincia",
        "la costa",
        "la sierra",
        "el valle del río",
        "la capital y alrededores",
    ],
    "seasons": {
        "winter": (
            "invierno",
            ["nevadas intensas", "heladas fuertes", "lluvia helada"],
            ["extremar la precaución y llevar cadenas", "evitar los puertos de montaña"],
        ),
        "spring": ("primavera", ["chubascos fuertes", "rachas de viento intensas"], ["reducir la velocidad"]),
        "summer": (
            "verano",
            ["una ola de calor", "tormentas por la tarde", "temperaturas muy altas"],
            ["evitar los viajes en las horas de más calor", "llevar siempre agua en el coche"],
        ),
        "autumn": (
            "otoño",
            ["lluvias persistentes", "niebla densa por la mañana", "fuertes vientos"],
            ["reducir la velocidad y aumentar la distancia de seguridad"],
        ),
    },
    "dirs": ["norte", "sur", "este", "oeste", "noroeste"],
    "improve": ["se despeje el cielo", "las temperaturas vuelvan a valores normales para la época"],
    "teams": [
        "Villanueva",
        "San Esteban",
        "Puerto Claro",
        "Valdemora",
        "Riofrío",
        "Castellar",
        "Peñalba",
        "Monteluz",
    ],
    "excuses": [
        "no supo aprovechar sus ocasiones",
        "pagó muy caros dos errores",
        "se quedó sin fuerzas al final",
    ],
    "companies": [
        "Conservas del Norte",
        "Textiles Alba",
        "Bicicletas Ruta",
        "Energía Solara",
        "Logística Ibérica",
        "Muebles Roble",
        "Lácteos Montaña",
    ],
    "quarters": ["primer", "segundo", "tercer", "cuarto"],
    "drivers": [
        "la fuerte demanda de sus nuevos productos",
        "el buen comportamiento de las exportaciones",
        "una campaña de Navidad excelente",
    ],
    "headwinds": [
        "la subida de los costes energéticos",
        "la menor demanda en Europa",
        "los retrasos de un proveedor",
    ],
    "ceo_up": ["apostando por la calidad", "invirtiendo en innovación"],
    "ceo_down": ["trabajando para recuperar la rentabilidad", "protegiendo el empleo"],
    "events": [
        ("el festival de jazz", "Festival de jazz"),
        ("la feria del libro", "Feria del libro"),
        ("el mercado medieval", "Mercado medieval"),
        ("el festival de cine", "Festival de cine"),
        ("la feria de artesanía", "Feria de artesanía"),
        ("la media maratón", "Media maratón"),
        ("la semana gastronómica", "Semana gastronómica"),
    ],
    "event_quotes": [
        "Este año tenemos más voluntarios que nunca",
        "Queremos que sea una fiesta para toda la familia",
        "Preparar todo esto nos lleva un año entero",
    ],
}

LEX["fr"] = {
    "towns": [
        "Saint-Aubin-sur-Loire",
        "Montclair",
        "Villeneuve-les-Pins",
        "Roches-Blanches",
        "Belleval",
        "Port-Meyran",
        "Sainte-Colombe",
        "Vaudrey",
        "Lavernoux",
        "Châteaubrun",
    ],
    "people": [
        "Claire Martin",
        "Julien Roux",
        "Sophie Lefèvre",
        "Nicolas Girard",
        "Camille Fontaine",
        "Thomas Mercier",
        "Isabelle Caron",
        "Antoine Perrin",
        "Léa Dumont",
        "Hugo Barbier",
    ],
    "weekdays": ["lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche"],
    "months": [
        "janvier",
        "février",
        "mars",
        "avril",
        "mai",
        "juin",
        "juillet",
        "août",
        "septembre",
        "octobre",
        "novembre",
        "décembre",
    ],
    "facilities": [
        ("une nouvelle médiathèque", "la nouvelle médiathèque", "nouvelle médiathèque"),
        ("une piscine couverte", "la piscine couverte", "piscine couverte"),
        ("une passerelle piétonne", "la passerelle", "passerelle piétonne"),
        ("une piste cyclable le long du canal", "la piste cyclable", "piste cyclable"),
        ("une nouvelle école maternelle", "la nouvelle école", "école maternelle"),
        ("une centrale solaire", "la centrale solaire", "centrale solaire"),
        ("une maison de santé", "la maison de santé", "maison de santé"),
    ],
    "concerns": [
        "du bruit des travaux",
        "de la disparition de places de stationnement",
        "d'une possible hausse des impôts locaux",
    ],
    "alts": ["à rénover les routes", "au logement", "aux transports en commun"],
    "council_quotes": [
        "C'est un investissement attendu depuis longtemps",
        "Ce projet va changer la vie des familles",
        "Nous avons écouté les habitants",
    ],
    "regions": [
        "sur le littoral",
        "dans les vallées du nord",
        "en montagne",
        "sur toute la région",
        "dans l'agglomération",
    ],
    "seasons": {
        "winter": (
            "hiver",
            ["de fortes chutes de neige", "du verglas", "un froid glacial"],
            ["de redoubler de prudence", "d'éviter les cols de montagne"],
        ),
        "spring": ("printemps", ["des averses", "un vent fort"], ["de réduire leur vitesse"]),
        "summer": (
            "été",
            ["une vague de chaleur", "des orages en fin de journée", "un grand soleil"],
            ["d'éviter de prendre la route aux heures les plus chaudes"],
        ),
        "autumn": (
            "automne",
            ["des pluies persistantes", "du brouillard le matin", "des rafales de vent"],
            ["de réduire leur vitesse et de garder leurs distances"],
        ),
    },
    "dirs": ["au nord", "au sud", "à l'est", "à l'ouest", "au nord-ouest"],
    "improve": ["le ciel se dégagera", "les températures retrouveront des valeurs de saison"],
    "teams": [
        "Montclair",
        "Belleval",
        "Vaudrey",
        "Lavernoux",
        "Châteaubrun",
        "Port-Meyran",
        "Sainte-Colombe",
        "Roches-Blanches",
    ],
    "excuses": [
        "le manque de réalisme de ses joueurs",
        "deux erreurs qui ont coûté cher",
        "une fin de match ratée",
    ],
    "companies": [
        "Biscuiterie Marchal",
        "Textiles Verdier",
        "Cycles Aurore",
        "Énergie Lumen",
        "Transports Delorme",
        "Fromagerie Belair",
    ],
    "quarters": ["premier", "deuxième", "troisième", "quatrième"],
    "drivers": [
        "la forte demande pour ses nouveaux produits",
        "le dynamisme des exportations",
        "de bonnes ventes pendant les fêtes",
    ],
    "headwinds": [
        "de la hausse des coûts de l'énergie",
        "d'une demande plus faible en Europe",
        "de retards chez un fournisseur",
    ],
    "ceo_up": ["continuer à investir dans l'innovation", "miser sur la qualité"],
    "ceo_down": ["tout faire pour préserver l'emploi", "réduire les coûts"],
    "events": [
        ("le festival de jazz", "Festival de jazz"),
        ("la fête du livre", "Fête du livre"),
        ("le marché de Noël", "Marché de Noël"),
        ("le festival du film", "Festival du film"),
        ("la fête des lumières", "Fête des lumières"),
        ("le semi-marathon", "Semi-marathon"),
        ("le marché des producteurs", "Marché des producteurs"),
    ],
    "event_quotes": [
        "Nous n'avons jamais eu autant de bénévoles",
        "Nous voulons un week-end pour toute la famille",
        "Il nous faut une année entière pour tout préparer",
    ],
}

LEX["de"] = {
    "towns": [
        "Lindenau",
        "Birkenfeld",
        "Oberwiesen",
        "Steinbach am See",
        "Rosenheide",
        "Falkenried",
        "Tannwald",
        "Eichstädt",
        "Neukirchen am Hang",
        "Waldbrunn",
    ],
    "people": [
        "Anna Becker",
        "Jonas Weber",
        "Katharina Vogel",
        "Markus Brandt",
        "Lena Hoffmann",
        "Stefan Keller",
        "Miriam Schulz",
        "Tobias Wagner",
        "Sabine Krüger",
        "Felix Lorenz",
    ],
    "weekdays": ["Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag", "Samstag", "Sonntag"],
    "months": [
        "Januar",
        "Februar",
        "März",
        "April",
        "Mai",
        "Juni",
        "Juli",
        "August",
        "September",
        "Oktober",
        "November",
        "Dezember",
    ],
    "facilities": [
        ("ein neues Hallenbad", "das neue Hallenbad", "Hallenbad"),
        ("eine neue Stadtbibliothek", "die neue Stadtbibliothek", "Stadtbibliothek"),
        ("eine Fußgängerbrücke über den Fluss", "die Fußgängerbrücke", "Fußgängerbrücke"),
        ("ein neues Radwegenetz", "das Radwegenetz", "Radwegenetz"),
        ("eine neue Grundschule", "die neue Grundschule", "Grundschule"),
        ("ein neues Gemeindezentrum", "das Gemeindezentrum", "Gemeindezentrum"),
        ("eine Solaranlage auf dem Rathausdach", "die Solaranlage", "Solaranlage"),
    ],
    "concerns": ["Lärm durch die Bauarbeiten", "den Wegfall von Parkplätzen", "steigende Kosten"],
    "alts": ["die Sanierung der Straßen", "bezahlbaren Wohnraum", "den Nahverkehr"],
    "council_quotes": [
        "Darauf haben die Menschen hier lange gewartet",
        "Das ist eine Investition in die Zukunft",
        "Wir haben die Pläne nach den Bürgerversammlungen zweimal angepasst",
    ],
    "regions": [
        "im Norden des Landkreises",
        "an der Küste",
        "in den Höhenlagen",
        "im Flachland",
        "rund um die Stadt",
    ],
    "seasons": {
        "winter": (
            "Winter",
            ["starken Schneefall", "gefrierenden Regen", "strengen Frost"],
            ["mehr Zeit einplanen", "Passstraßen möglichst meiden"],
        ),
        "spring": ("Frühling", ["kräftige Schauer", "stürmische Böen"], ["vorsichtig fahren"]),
        "summer": (
            "Sommer",
            ["eine Hitzewelle", "Gewitter am Nachmittag", "viel Sonnenschein"],
            ["lange Fahrten in der Mittagshitze vermeiden"],
        ),
        "autumn": (
            "Herbst",
            ["Dauerregen", "dichten Nebel am Morgen", "stürmischen Wind"],
            ["langsamer fahren und Abstand halten"],
        ),
    },
    "dirs": ["Nord", "Süd", "Ost", "West", "Nordwest"],
    "improve": ["lockert die Bewölkung auf", "kehren die Temperaturen auf normale Werte zurück"],
    "teams": [
        "Lindenau",
        "Birkenfeld",
        "Oberwiesen",
        "Rosenheide",
        "Falkenried",
        "Tannwald",
        "Eichstädt",
        "Waldbrunn",
    ],
    "excuses": [
        "zu viele Chancen liegen lassen",
        "in der zweiten Halbzeit den Faden verloren",
        "zwei entscheidende Fehler gemacht",
    ],
    "companies": [
        "Brandt Maschinenbau",
        "Lindhof Feinkost",
        "Vogel Textil",
        "Sonnwerk Energie",
        "Kranich Logistik",
        "Tannhof Molkerei",
    ],
    "quarters": ["ersten", "zweiten", "dritten", "vierten"],
    "drivers": [
        "der starken Nachfrage nach neuen Produkten",
        "guter Exportgeschäfte",
        "eines starken Weihnachtsgeschäfts",
    ],
    "headwinds": [
        "die Energiekosten gestiegen sind",
        "die Nachfrage in Europa nachgelassen hat",
        "ein wichtiger Zulieferer nicht liefern konnte",
    ],
    "ceo_up": ["weiter in neue Produkte investieren", "auf Qualität statt Masse setzen"],
    "ceo_down": ["Kosten senken, ohne Stellen abzubauen", "gestärkt aus der Krise hervorgehen"],
    "events": [
        ("das Jazzfestival", "Jazzfestival"),
        ("die Buchmesse", "Buchmesse"),
        ("der Weihnachtsmarkt", "Weihnachtsmarkt"),
        ("das Stadtfest", "Stadtfest"),
        ("der Halbmarathon", "Halbmarathon"),
        ("das Filmfest", "Filmfest"),
        ("der Bauernmarkt", "Bauernmarkt"),
        ("das Lichterfest", "Lichterfest"),
    ],
    "event_quotes": [
        "So viele Ehrenamtliche hatten wir noch nie",
        "Es soll ein Fest für die ganze Familie werden",
        "Die Vorbereitung dauert jedes Mal ein ganzes Jahr",
    ],
}

NEWS["zh"] = {
    "council": {
        "main": {
            "titles": ["{town}将新建{fac_bare}", "{town}{fac_bare}项目获批", "{town}{fac_bare}建设方案出炉"],
            "lead": [
                "{town}政府{weekday}召开常务会议，审议通过了新建{fac_bare}的方案。",
                "经过几个月的讨论，{town}新建{fac_bare}的计划终于获批。",
            ],
            "groups": [
                [
                    "项目总投资约{cost_cny}元，预计{year}年建成。",
                    "工程计划于{month}开工，工期约{n_months}个月。",
                ],
                ["“{council_quote}，”负责该项目的{person}表示。"],
                ["也有居民担心{concern}。", "有关部门表示，{weekday2}将举行说明会，听取市民意见。"],
            ],
        }
    },
    "weather": {
        "main": {
            "titles": [
                "{weekday}{region}有{cond}",
                "气象台：{region}将迎来{cond}",
                "天气预报：{weekday}{cond}",
            ],
            "lead": [
                "气象台预计，{weekday}{region}将出现{cond}，气温在{lo}到{hi}摄氏度之间。",
                "{weekday}{region}有{cond}，最高气温{hi}摄氏度左右。",
            ],
            "groups": [
                ["局部地区阵风可达每小时{gust}公里。", "全天风力不大。"],
                ["提醒司机朋友{advice}。", "气象台已对部分地区发布黄色预警。"],
                ["{weekday2}起天气将逐渐好转，{improve}。"],
            ],
        }
    },
    "sports": {
        "win": {
            "titles": ["{winner}{s1}比{s2}击败{loser}", "{scorer}破门，{winner}战胜{loser}"],
            "lead": [
                "{weekday}晚，{winner}以{s1}比{s2}战胜{loser}，现场约有{crowd}名观众。",
                "在{weekday}进行的比赛中，{winner}凭借{scorer}的进球以{s1}比{s2}击败{loser}。",
            ],
            "groups": [
                ["第{minute}分钟，{scorer}首开纪录。", "{loser}控球占优，但始终没能创造出好机会。"],
                ["此役过后，{winner}升至积分榜第{pos}位。", "{winner}已经取得{streak}连胜。"],
                ["{loser}主教练{coach}赛后表示，球队“{excuse}”。"],
            ],
        },
        "draw": {
            "titles": ["{home}与{away}握手言和", "{home}{s1}比{s2}战平{away}"],
            "lead": ["{weekday}晚，{home}与{away}战成{s1}比{s2}平。"],
            "groups": [
                ["下半场双方都有机会打破僵局。", "上半场比赛节奏较慢，双方都比较谨慎。"],
                ["{away}已经连续{streak}场未尝胜绩。"],
                ["{home}主教练{coach}赛后表示，球队“{excuse}”。"],
            ],
        },
    },
    "business": {
        "up": {
            "titles": [
                "{company}第{quarter}季度营收增长{pct}%",
                "{company}业绩超预期",
                "{company}将在{town}新增{jobs}个岗位",
            ],
            "lead": ["{company}公布第{quarter}季度业绩，营收同比增长{pct}%，主要得益于{driver}。"],
            "groups": [
                ["公司计划在{town}新增{jobs}个工作岗位。", "公司同时上调了全年业绩预期。"],
                ["公司董事长{person}表示，将继续{ceo_up}。"],
            ],
        },
        "down": {
            "titles": ["{company}第{quarter}季度营收下降{pct}%", "{company}下调全年预期"],
            "lead": ["{company}第{quarter}季度营收同比下降{pct}%，主要原因是{headwind}。"],
            "groups": [
                ["公司表示，将推迟在{town}的扩产计划。", "公司预计全年销售额将与去年基本持平。"],
                ["公司董事长{person}表示，接下来将{ceo_down}。"],
            ],
        },
    },
    "events": {
        "main": {
            "titles": ["{town}{event_title}本周末开幕", "{town}{event_title}开幕在即", "{event_title}来了！"],
            "lead": [
                "一年一度的{town}{event}将于本周末开幕。",
                "{town}{event}{weekday}开幕，主办方预计将吸引约{visitors}名游客。",
            ],
            "groups": [
                [
                    "门票价格为{price_cny}元，12岁以下儿童免费。",
                    "活动免费向公众开放，部分体验项目需要提前预约。",
                ],
                ["活动期间，老城区部分道路将实行交通管制。", "公交公司将加开多条临时线路。"],
                ["“{event_quote}，”主办方负责人{person}说。"],
            ],
        }
    },
}

NEWS["es"] = {
    "council": {
        "main": {
            "titles": [
                "{town} aprueba la construcción de {fac_a}",
                "Luz verde a {fac_the} de {town}",
                "{town} tendrá {fac_a} en {year}",
            ],
            "lead": [
                "El pleno del ayuntamiento de {town} aprobó {weekday} la construcción de {fac_a} con {yes} votos "
                "a favor y {no} en contra.",
                "{town} contará con {fac_a} tras el acuerdo alcanzado {weekday} en el pleno municipal.",
            ],
            "groups": [
                [
                    "El proyecto costará unos {cost} millones de euros y debería estar terminado en {year}.",
                    "Las obras comenzarán en {month} y durarán aproximadamente {n_months} meses.",
                ],
                ['"{council_quote}", afirmó {person}, responsable de urbanismo.'],
                [
                    "Algunos vecinos temen {concern}.",
                    "La oposición considera que el dinero debería destinarse a {alt}.",
                ],
            ],
        }
    },
    "weather": {
        "main": {
            "titles": ["Aviso por {cond} en {region}", "El tiempo: {cond} para {weekday}"],
            "lead": [
                "La agencia meteorológica prevé {cond} en {region} {weekday}, con temperaturas entre {lo} y {hi} "
                "grados.",
                "{weekday} habrá {cond} en {region}, con máximas de unos {hi} grados.",
            ],
            "groups": [
                [
                    "El viento del {dir} podría alcanzar rachas de {gust} km/h.",
                    "El viento será flojo durante casi todo el día.",
                ],
                ["Se recomienda a los conductores {advice}."],
                ["Se espera que el tiempo mejore {weekday2}, cuando {improve}."],
            ],
        }
    },
    "sports": {
        "win": {
            "titles": ["{winner} gana {s1}-{s2} a {loser}", "Victoria de {winner} ante {loser}"],
            "lead": ["{winner} se impuso {s1}-{s2} a {loser} {weekday} ante {crowd} espectadores."],
            "groups": [
                [
                    "{scorer} abrió el marcador en el minuto {minute}.",
                    "{loser} tuvo más posesión, pero apenas generó ocasiones claras.",
                ],
                [
                    "Con esta victoria, {winner} sube al {pos} puesto de la clasificación.",
                    "{winner} suma ya {streak} victorias seguidas.",
                ],
                ["Desde el banquillo de {loser}, {coach} reconoció que su equipo {excuse}."],
            ],
        },
        "draw": {
            "titles": ["Empate entre {home} y {away}", "Reparto de puntos entre {home} y {away}"],
            "lead": ["{home} y {away} empataron {s1}-{s2} {weekday} ante {crowd} espectadores."],
            "groups": [
                ["El partido estuvo muy igualado hasta el final."],
                ["{away} encadena {streak} partidos sin ganar."],
                ["Desde el banquillo de {home}, {coach} admitió que su equipo {excuse}."],
            ],
        },
    },
    "business": {
        "up": {
            "titles": [
                "{company} eleva sus ventas un {pct} %",
                "{company} contratará a {jobs} personas en {town}",
            ],
            "lead": ["{company} aumentó su facturación un {pct} % en el {quarter} trimestre gracias a {driver}."],
            "groups": [
                ["La empresa prevé contratar a {jobs} personas en su planta de {town}."],
                ["{person}, al frente de la compañía, aseguró que la empresa seguirá {ceo_up}."],
                ["Las acciones subieron un {pct2} % en la apertura."],
            ],
        },
        "down": {
            "titles": ["Las ventas de {company} caen un {pct} %", "{company} aplaza su ampliación en {town}"],
            "lead": ["{company} registró una caída del {pct} % en sus ventas del {quarter} trimestre por {headwind}."],
            "groups": [
                ["La compañía ha aplazado la ampliación de su fábrica de {town}."],
                ["{person}, al frente de la compañía, aseguró que la empresa seguirá {ceo_down}."],
                ["Las acciones bajaron un {pct2} % en la apertura."],
            ],
        },
    },
    "events": {
        "main": {
            "titles": ["{event_title} en {town}", "{town} se prepara para {event}"],
            "lead": [
                "{event_cap} vuelve a {town} este fin de semana.",
                "Los organizadores esperan unos {visitors} visitantes en {event} de {town}.",
            ],
            "groups": [
                [
                    "La entrada cuesta {price} euros y los menores de doce años entran gratis.",
                    "La entrada es libre, aunque algunos talleres requieren inscripción previa.",
                ],
                [
                    "Varias calles del casco antiguo estarán cortadas al tráfico.",
                    "Habrá autobuses especiales desde la estación durante todo el fin de semana.",
                ],
                ['"{event_quote}", explicó {person}, de la organización.'],
            ],
        }
    },
}

NEWS["fr"] = {
    "council": {
        "main": {
            "titles": [
                "{town} : feu vert pour {fac_a}",
                "Le conseil municipal de {town} valide {fac_the}",
                "{town} aura {fac_a} en {year}",
            ],
            "lead": [
                "Le conseil municipal de {town} a approuvé {weekday} la construction d'{fac_a}, par {yes} voix "
                "contre {no}.",
                "{town} aura bientôt {fac_a} : le projet a été adopté {weekday} en conseil municipal.",
            ],
            "groups": [
                [
                    "Le projet devrait coûter environ {cost} millions d'euros et être achevé en {year}.",
                    "Les travaux commenceront en {month} et dureront environ {n_months} mois.",
                ],
                ["« {council_quote} », a déclaré {person} lors de la séance."],
                [
                    "Certains habitants s'inquiètent {concern}.",
                    "L'opposition estime que l'argent aurait dû servir {alt}.",
                ],
            ],
        }
    },
    "weather": {
        "main": {
            "titles": ["Météo : {cond} au programme {weekday} {region}", "Prévisions pour {weekday}"],
            "lead": [
                "Les prévisionnistes annoncent {cond} {region} {weekday}, avec des températures comprises entre "
                "{lo} et {hi} degrés.",
                "Les prévisionnistes annoncent {cond} {region} {weekday}, avec des maximales autour de {hi} degrés.",
            ],
            "groups": [
                [
                    "Le vent, orienté {dir}, pourrait souffler en rafales jusqu'à {gust} km/h.",
                    "Le vent restera faible la plupart de la journée.",
                ],
                ["Il est conseillé aux automobilistes {advice}."],
                ["Le temps devrait s'améliorer {weekday2}, quand {improve}."],
            ],
        }
    },
    "sports": {
        "win": {
            "titles": ["{winner} bat {loser} {s1}-{s2}", "Victoire de {winner} face à {loser}"],
            "lead": ["{winner} s'est imposé {s1}-{s2} face à {loser} {weekday} devant {crowd} spectateurs."],
            "groups": [
                [
                    "{scorer} a ouvert le score à la {minute}e minute.",
                    "{loser} a eu le ballon plus souvent, sans se créer de véritables occasions.",
                ],
                [
                    "Grâce à cette victoire, {winner} remonte à la {pos} place du classement.",
                    "{winner} enchaîne une {streak}e victoire consécutive.",
                ],
                ["Côté {loser}, {coach} a regretté {excuse}."],
            ],
        },
        "draw": {
            "titles": ["Match nul entre {home} et {away}", "{home} et {away} dos à dos"],
            "lead": ["{home} et {away} se sont quittés sur un match nul ({s1}-{s2}) {weekday}."],
            "groups": [
                ["Les deux équipes ont eu des occasions en seconde période."],
                ["{away} reste sur {streak} matchs sans victoire."],
                ["Côté {home}, {coach} a regretté {excuse}."],
            ],
        },
    },
    "business": {
        "up": {
            "titles": [
                "{company} : chiffre d'affaires en hausse de {pct} %",
                "{company} va embaucher à {town}",
            ],
            "lead": [
                "{company} a vu son chiffre d'affaires progresser de {pct} % au {quarter} trimestre, porté par "
                "{driver}."
            ],
            "groups": [
                ["L'entreprise prévoit d'embaucher {jobs} personnes sur son site de {town}."],
                ["La direction, par la voix de {person}, a assuré que l'entreprise allait {ceo_up}."],
            ],
        },
        "down": {
            "titles": [
                "{company} : chiffre d'affaires en baisse de {pct} %",
                "Trimestre difficile pour {company}",
            ],
            "lead": [
                "Le chiffre d'affaires de {company} a reculé de {pct} % au {quarter} trimestre en raison {headwind}."
            ],
            "groups": [
                ["Le groupe a reporté l'agrandissement de son usine de {town}."],
                ["La direction, par la voix de {person}, a assuré que l'entreprise allait {ceo_down}."],
            ],
        },
    },
    "events": {
        "main": {
            "titles": ["{event_title} : {town} se prépare", "{event_title} à {town} : ce qu'il faut savoir"],
            "lead": [
                "{event_cap} revient à {town} ce week-end.",
                "Les organisateurs attendent environ {visitors} visiteurs à {town} pour {event}.",
            ],
            "groups": [
                [
                    "L'entrée coûte {price} euros ; elle est gratuite pour les moins de douze ans.",
                    "L'entrée est libre, mais certains ateliers sont sur réservation.",
                ],
                [
                    "Plusieurs rues du centre-ville seront fermées à la circulation.",
                    "Des navettes gratuites relieront la gare au centre-ville.",
                ],
                ["« {event_quote} », explique {person}, membre de l'équipe d'organisation."],
            ],
        }
    },
}

NEWS["de"] = {
    "council": {
        "main": {
            "titles": [
                "{town}: Grünes Licht für {fac_a}",
                "{town} bekommt {fac_a}",
                "Gemeinderat {town} stimmt für {fac_a}",
            ],
            "lead": [
                "Der Gemeinderat von {town} hat am {weekday} mit {yes} zu {no} Stimmen grünes Licht für {fac_a} "
                "gegeben.",
                "{town} bekommt {fac_a}: Das hat der Gemeinderat am {weekday} beschlossen.",
            ],
            "groups": [
                [
                    "Das Projekt soll rund {cost} Millionen Euro kosten und bis {year} fertig sein.",
                    "Die Bauarbeiten beginnen im {month} und dauern voraussichtlich {n_months} Monate.",
                ],
                ["„{council_quote}“, sagte {person} vom Bauausschuss."],
                [
                    "Einige Anwohner befürchten {concern}.",
                    "Die Opposition hätte das Geld lieber in {alt} investiert.",
                ],
            ],
        }
    },
    "weather": {
        "main": {
            "titles": ["Das Wetter am {weekday}", "Wetteraussichten {region}", "Wetterbericht für {weekday}"],
            "lead": [
                "Der Wetterdienst erwartet am {weekday} {cond} {region}, bei Temperaturen zwischen {lo} und {hi} Grad.",
                "Für {weekday} sagt der Wetterdienst {cond} {region} voraus, die Höchstwerte liegen bei {hi} Grad.",
            ],
            "groups": [
                [
                    "Der Wind aus {dir} kann in Böen bis zu {gust} km/h erreichen.",
                    "Der Wind bleibt meist schwach.",
                ],
                ["Autofahrer sollten {advice}."],
                ["Ab {weekday2} soll sich das Wetter bessern, dann {improve}."],
            ],
        }
    },
    "sports": {
        "win": {
            "titles": ["{winner} schlägt {loser} {s1}:{s2}", "Sieg für {winner} gegen {loser}"],
            "lead": ["{winner} hat am {weekday} vor {crowd} Zuschauern mit {s1}:{s2} gegen {loser} gewonnen."],
            "groups": [
                [
                    "{scorer} erzielte in der {minute}. Minute den Führungstreffer.",
                    "{loser} hatte mehr Ballbesitz, kam aber kaum zu klaren Chancen.",
                ],
                [
                    "Mit dem Sieg klettert {winner} auf Platz {pos} der Tabelle.",
                    "Für {winner} war es der {streak}. Sieg in Folge.",
                ],
                ["Aus dem Trainerteam von {loser} hieß es, die Mannschaft habe {excuse}."],
            ],
        },
        "draw": {
            "titles": ["Remis zwischen {home} und {away}", "{home} und {away} trennen sich {s1}:{s2}"],
            "lead": ["{home} und {away} trennten sich am {weekday} {s1}:{s2}."],
            "groups": [
                ["Beide Teams hatten in der zweiten Halbzeit Chancen auf den Sieg."],
                ["{away} ist seit {streak} Spielen sieglos."],
                ["Aus dem Trainerteam von {home} hieß es, die Mannschaft habe {excuse}."],
            ],
        },
    },
    "business": {
        "up": {
            "titles": [
                "{company} steigert Umsatz um {pct} Prozent",
                "{company} schafft {jobs} Stellen in {town}",
            ],
            "lead": [
                "{company} hat im {quarter} Quartal den Umsatz um {pct} Prozent gesteigert, vor allem dank {driver}."
            ],
            "groups": [
                ["Das Unternehmen will am Standort {town} {jobs} neue Stellen schaffen."],
                ["{person} aus der Geschäftsführung kündigte an, man werde {ceo_up}."],
            ],
        },
        "down": {
            "titles": ["{company}: Umsatz sinkt um {pct} Prozent", "Schwaches Quartal für {company}"],
            "lead": ["Bei {company} ist der Umsatz im {quarter} Quartal um {pct} Prozent gesunken, weil {headwind}."],
            "groups": [
                ["Die geplante Erweiterung des Werks in {town} wird verschoben."],
                ["{person} aus der Geschäftsführung kündigte an, man werde {ceo_down}."],
            ],
        },
    },
    "events": {
        "main": {
            "titles": ["{event_title} in {town}", "{event_title} {year}: Das müssen Besucher wissen"],
            "lead": [
                "{event_cap} kehrt an diesem Wochenende nach {town} zurück.",
                "Die Veranstalter rechnen in {town} mit rund {visitors} Besucherinnen und Besuchern.",
            ],
            "groups": [
                [
                    "Der Eintritt kostet {price} Euro, Kinder unter zwölf Jahren haben freien Eintritt.",
                    "Der Eintritt ist frei, einige Workshops erfordern jedoch eine Anmeldung.",
                ],
                [
                    "Mehrere Straßen in der Altstadt werden für den Verkehr gesperrt.",
                    "Vom Bahnhof aus fahren zusätzliche Busse.",
                ],
                ["„{event_quote}“, sagte {person} vom Organisationsteam."],
            ],
        }
    },
}

NEWS_KINDS = {lang: list(kinds) for lang, kinds in NEWS.items()}
FACT_SHARE = {"en": 0.2, "zh": 0.25, "es": 0.2, "fr": 0.2, "de": 0.2}
SEP = {"en": " ", "zh": "", "es": " ", "fr": " ", "de": " "}
# a document may skip the introduction, unless the next sentence starts with a pronoun
_PRONOUN_STARTS = {
    "en": ("It ", "Its ", "They ", "Their "),
    "es": ("Su ", "Sus ", "Se ", "Puede ", "Tiene "),
    "fr": ("Il ", "Elle ", "Ils ", "Son ", "Sa ", "Ses "),
    "de": ("Er ", "Sie ", "Es ", "Sein ", "Seine ", "Ihr ", "Ihre "),
    "zh": (),
}
_SEASON_TEMPS = {
    "winter": (-12, -2, 3, 8),
    "spring": (2, 8, 6, 12),
    "summer": (15, 21, 9, 15),
    "autumn": (3, 10, 4, 9),
}
_EN_SEASON_WORD = {"winter": "winter", "spring": "spring", "summer": "summer", "autumn": "autumn"}


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _fmt_int(n: int, lang: str) -> str:
    s = f"{n:,}"
    return {"en": s, "de": s.replace(",", "."), "es": s.replace(",", "."), "fr": s.replace(",", " ")}.get(lang, str(n))


def _fmt_dec(x: float, lang: str) -> str:
    s = f"{x:.1f}".removesuffix(".0")
    return s.replace(".", ",") if lang in ("de", "es", "fr") else s


def _ordinal(n: int, lang: str) -> str:
    if lang == "en":
        suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
        return f"{n}{suffix}"
    if lang == "es":
        return f"{n}.º"
    if lang == "fr":
        return "1re" if n == 1 else f"{n}e"
    return str(n)


def _news_slots(rng: random.Random, lang: str, kind: str) -> tuple[str, dict[str, object]]:
    """Random slot values for one news snippet; returns (variant, slots)."""
    L = LEX[lang]
    s: dict[str, object] = {}
    s["town"], s["town2"], s["other"] = rng.sample(L["towns"], 3)
    s["person"], s["coach"], s["scorer"] = rng.sample(L["people"], 3)
    day = rng.randrange(7)  # weekday2 is a few days after weekday
    s["weekday"], s["weekday2"] = L["weekdays"][day], L["weekdays"][(day + rng.randint(1, 3)) % 7]
    s["month"] = rng.choice(L["months"])
    s["year"] = rng.choice([2026, 2027, 2028])
    cost = rng.randint(3, 60) / 2
    wan = int(cost * 1000)  # Chinese amounts are written in 万 (10^4) / 亿 (10^8) yuan
    s["cost"], s["cost_cny"] = _fmt_dec(cost, lang), f"{wan}万" if wan < 10000 else f"{wan / 10000:g}亿"
    variant = "main"
    if kind == "council":
        s["fac_a"], s["fac_the"], s["fac_bare"] = rng.choice(L["facilities"])
        s["yes"] = rng.randint(6, 11)
        s["no"] = rng.randint(0, min(5, s["yes"] - 2))
        s["season"] = rng.choice(list(_EN_SEASON_WORD.values()))
        s["n_months"] = rng.choice([8, 10, 12, 14, 18, 24])
        s["council_quote"] = rng.choice(L["council_quotes"])
        s["concern"] = rng.choice(L["concerns"])
        s["alt"] = rng.choice(L.get("alts", [""]))
        s["short_quote"] = rng.choice(L.get("short_quotes", [""])).format(town=s["town"])
    elif kind == "weather":
        season = rng.choice(list(_SEASON_TEMPS))
        name, conds, advice = L["seasons"][season]
        lo_min, lo_max, span_min, span_max = _SEASON_TEMPS[season]
        lo = rng.randint(lo_min, lo_max)
        s.update(
            season=name,
            cond=rng.choice(conds),
            advice=rng.choice(advice),
            lo=lo,
            hi=lo + rng.randint(span_min, span_max),
            gust=rng.randrange(50, 115, 5),
            dir=rng.choice(L.get("dirs", [""])),
            improve=rng.choice(L["improve"]),
            region=rng.choice(L["regions"]),
            cmp=rng.choice(L.get("cmp", [""])),
        )
        s["cond_cap"] = _cap(str(s["cond"]))
    elif kind == "sports":
        home, away = rng.sample(L["teams"], 2)
        if rng.random() < 0.22:
            variant = "draw"
            g1 = g2 = rng.randint(0, 3)
            winner, loser = home, away
        else:
            variant = "win"
            g1 = rng.randint(1, 4)
            g2 = rng.randint(0, g1 - 1)
            winner, loser = (home, away) if rng.random() < 0.6 else (away, home)
        s.update(
            home=home,
            away=away,
            winner=winner,
            loser=loser,
            s1=g1,
            s2=g2,
            minute=rng.randint(3, 88),
            crowd=_fmt_int(rng.randrange(1200, 24000, 100), lang),
            pos=_ordinal(rng.randint(1, 14), lang),
            streak=rng.randint(2, 5),
            excuse=rng.choice(L["excuses"]),
            daypart=rng.choice(L.get("dayparts", [""])),
        )
    elif kind == "business":
        variant = "up" if rng.random() < 0.6 else "down"
        s.update(
            company=rng.choice(L["companies"]),
            pct=rng.randint(2, 24),
            pct2=_fmt_dec(rng.randint(5, 80) / 10, lang),
            quarter=rng.choice(L["quarters"]),
            driver=rng.choice(L["drivers"]),
            headwind=rng.choice(L["headwinds"]),
            jobs=rng.choice([40, 60, 80, 120, 150, 200, 250, 300]),
            ceo_up=rng.choice(L["ceo_up"]),
            ceo_down=rng.choice(L["ceo_down"]),
        )
    elif kind == "science":
        ftitle, finding, detail, caveat = rng.choice(L["findings"])
        s.update(
            ftitle=ftitle,
            ftitle_lc=ftitle[0].lower() + ftitle[1:],
            finding=finding,
            finding_cap=_cap(finding),
            detail=detail,
            caveat=caveat,
            univ=rng.choice(L["univs"]).format(town=s["town"]),
            sci_quote=rng.choice(L["sci_quotes"]),
        )
    elif kind == "events":
        event, event_title = rng.choice(L["events"])
        s.update(
            event=event,
            event_cap=_cap(event),
            event_title=event_title,
            visitors=_fmt_int(rng.randrange(2000, 60000, 500), lang),
            price=rng.choice([5, 8, 10, 12, 15, 20]),
            price_cny=rng.choice([20, 30, 50, 80, 100]),
            hour=rng.choice([6, 7, 8, 9]),
            event_quote=rng.choice(L["event_quotes"]),
        )
    elif kind == "transport":
        variant = rng.choice(["delay", "route", "closure"])
        cause, cause_short = rng.choice(L["causes"])
        s.update(
            line=rng.randint(1, 12),
            cause=cause.format(town2=s["town2"]),
            cause_short=cause_short,
            apology=rng.choice(L["apologies"]),
            freq=rng.choice([10, 15, 20, 30]),
            road=rng.choice(L["roads"]),
            weeks=rng.choice([3, 4, 6, 8, 10, 12]),
            mins={
                "delay": rng.randrange(20, 95, 5),
                "route": rng.randrange(15, 55, 5),
                "closure": rng.randrange(10, 30, 5),
            }[variant],
        )
    elif kind == "community":
        variant = rng.choice(["cleanup", "library", "garden", "repair"])
        s.update(
            n=rng.randint(25, 180),
            kg=rng.randrange(120, 1500, 10),
            hour_pm=rng.choice([7, 8, 9]),
            n_ord=_ordinal(rng.randint(12, 120), lang),
            cleanup_quote=rng.choice(L["cleanup_quotes"]),
            kid_quote=rng.choice(L["kid_quotes"]),
        )
    return variant, s


def news_doc(rng: random.Random, lang: str, kind: str) -> tuple[str, str]:
    variant, slots = _news_slots(rng, lang, kind)
    spec = NEWS[lang][kind][variant]
    title = _cap(rng.choice(spec["titles"]).format_map(slots))
    groups = spec["groups"]
    n_more = min(len(groups), rng.choice([0, 1, 1, 2, 2, 2, 3, 3]))
    templates = [rng.choice(spec["lead"])] + [
        rng.choice(groups[i]) for i in sorted(rng.sample(range(len(groups)), n_more))
    ]
    text = SEP[lang].join(_cap(t.format_map(slots)) for t in templates)
    return title, text


def fact_doc(rng: random.Random, lang: str) -> tuple[str, str]:
    kind, name, sents = rng.choice(FACTS[lang])
    n = rng.choice([1, 2, 2, 3, 3, 4])
    rest = list(range(1, len(sents)))
    picked = sorted(rng.sample(rest, min(n, len(rest))))
    if rng.random() < 0.8 or sents[picked[0]].startswith(_PRONOUN_STARTS[lang]):
        picked = [0] + picked[: n - 1]
    title = rng.choice(FACT_TITLES[lang][kind]).format(n=name)
    return title, SEP[lang].join(sents[i] for i in picked)


def make_corpus(seed: int = CORPUS_SEED) -> list[dict[str, object]]:
    rng = random.Random(seed)
    docs: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for lang, count in CORPUS_LANG_COUNTS.items():
        made = 0
        while made < count:
            for _attempt in range(200):
                if rng.random() < FACT_SHARE[lang]:
                    title, text = fact_doc(rng, lang)
                else:
                    title, text = news_doc(rng, lang, rng.choice(NEWS_KINDS[lang]))
                if text not in seen:
                    break
            else:  # pragma: no cover
                raise RuntimeError(f"could not compose a unique {lang} document")
            seen.add(text)
            docs.append((lang, title, text))
            made += 1
    assert len(docs) == N_DOCS
    rng.shuffle(docs)
    rows: list[dict[str, object]] = []
    for i, (lang, title, text) in enumerate(docs, start=1):
        doc_id = f"d{i:04d}"
        value: str | None = text
        if doc_id in EMPTY_TEXT_IDS:
            value = ""
        elif doc_id in NULL_TEXT_IDS:
            value = None
        rows.append({"doc_id": doc_id, "lang": lang, "title": title, "text": value})
    return rows


def corpus_jsonl(rows: list[dict[str, object]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", type=Path, default=OUT_DIR, help="output folder (default: sample_data/)")
    ap.add_argument("--check", action="store_true", help="do not write; fail if the files on disk differ")
    args = ap.parse_args(argv)

    outputs = {
        "reviews.csv": reviews_csv(make_reviews()),
        "corpus.jsonl": corpus_jsonl(make_corpus()),
    }
    status = 0
    for name, content in outputs.items():
        path = args.out_dir / name
        if args.check:
            same = path.exists() and path.read_text(encoding="utf-8") == content
            print(f"{path}: {'up to date' if same else 'DIFFERS'}")
            status |= 0 if same else 1
        else:
            args.out_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8", newline="")
            print(f"wrote {path} ({len(content.encode('utf-8')):,} bytes)")
    return status


if __name__ == "__main__":
    sys.exit(main())
