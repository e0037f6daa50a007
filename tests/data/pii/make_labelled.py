"""Writes labelled.jsonl: strings labelled with the PII kinds they contain ([] = none).

Run once (``python tests/data/pii/make_labelled.py``); the output is committed and read by
tests/test_pii.py. Positives are prompt-like sentences carrying one or more pieces of PII of
each kind in several formats; negatives are the hard cases a prompt set is full of (versions,
dates, times, prices, quantities, ISBNs, card-like digit runs that fail the Luhn check, plain
URLs, code, maths). The labels are the author's; every line says which kinds a careful reader
would redact.
"""

import json
import random
from pathlib import Path


def luhn_digit(body: str) -> str:
    total = 0
    for i, c in enumerate(reversed(body)):
        d = int(c)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def card(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    return body + luhn_digit(body)


def group(number: str, sep: str) -> str:
    if len(number) == 15:  # Amex 4-6-5
        return sep.join([number[:4], number[4:10], number[10:]])
    return sep.join(number[i : i + 4] for i in range(0, len(number), 4))


def main() -> None:
    rng = random.Random(4)
    rows: list[tuple[str, list[str]]] = []

    emails = [
        "jane.doe@example.com",
        "bob_smith42@gmail.com",
        "a.b-c+tag@mail.co.uk",
        "support@my-company.io",
        "LISA.WONG@Outlook.com",
        "x7@uni.edu.au",
        "first.last@sub.domain.org",
        "info@shop.de",
        "r2d2@starwars.net",
        "hello@tiny.ai",
    ]
    email_ctx = [
        "Write a polite reply to {} about the late invoice.",
        "My email is {}, can you draft a cover letter for me?",
        "Forward this to {} and summarize the thread.",
        "Contact: {}\nPlease rewrite this signature to look professional.",
        "Is {} a valid address? I keep getting bounces.",
        "Send the minutes to {} by Friday.",
    ]
    for i, e in enumerate(emails):
        rows.append((email_ctx[i % len(email_ctx)].format(e), ["email"]))
    for i in range(4):
        rows.append(
            (
                email_ctx[(i + 2) % len(email_ctx)].format(
                    f"{rng.choice(['tom', 'ana', 'li', 'sam'])}{rng.randint(1, 999)}@example.org"
                ),
                ["email"],
            )
        )

    phones = [
        "(555) 123-4567",
        "555-867-5309",
        "415.555.2671",
        "+1 415 555 2671",
        "+44 20 7946 0958",
        "+33 1 42 68 53 00",
        "+49 30 901820",
        "+91 98765 43210",
        "+1-212-555-0199",
        "(212) 555-0147",
        "+61 2 9374 4000",
        "+81 3-1234-5678",
        "646-555-0123",
        "+353 1 234 5678",
    ]
    phone_ctx = [
        "Call me at {} tomorrow and help me write a script for the call.",
        "My number is {}. Draft a text message to my landlord.",
        "Please rewrite: 'Reach our office on {} between 9 and 5.'",
        "{} keeps calling me, how do I block it on Android?",
    ]
    for i, p in enumerate(phones):
        rows.append((phone_ctx[i % len(phone_ctx)].format(p), ["phone"]))

    cards = [
        card("4", 16, rng),
        card("4", 16, rng),
        card("51", 16, rng),
        card("55", 16, rng),
        card("37", 15, rng),
        card("34", 15, rng),
        card("6011", 16, rng),
        card("35", 16, rng),
        card("4", 13, rng),
        card("22", 16, rng),
        card("4", 19, rng),
        card("36", 14, rng),
    ]
    card_ctx = [
        "My card {} was charged twice, write a complaint.",
        "Card number: {} exp 09/27. Why was it declined?",
        "Please check if {} is a Visa or Mastercard.",
        "I typed {} into the form, did I make a mistake?",
    ]
    for i, c in enumerate(cards):
        text = group(c, rng.choice([" ", "-", ""])) if len(c) in (15, 16) else c
        rows.append((card_ctx[i % len(card_ctx)].format(text), ["card"]))

    ssns = [
        "123-45-6789",
        "078-05-1120",
        "219-09-9999",
        "457-55-5462",
        "536-22-8726",
        "321-54-9876",
        "401-12-3344",
        "612-80-1234",
    ]
    ninos = ["QQ 12 34 56 C", "AB123456C", "JG 10 37 57 A", "NP 65 43 21 B"]
    gov_ctx = [
        "My SSN is {} - fill in this tax form for me.",
        "Employee record: Jane Roe, SSN {}, start date March 3.",
        "Is it safe to email my social security number {} to HR?",
        "National Insurance number {}: what is my tax code?",
    ]
    for i, s in enumerate(ssns):
        rows.append((gov_ctx[i % 3].format(s), ["gov_id"]))
    for n in ninos:
        rows.append((gov_ctx[3].format(n), ["gov_id"]))

    ips = [
        "192.168.1.10",
        "10.0.0.254",
        "8.8.8.8",
        "172.16.254.1",
        "203.0.113.42",
        "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
        "2001:db8::ff00:42:8329",
        "fe80::1",
        "198.51.100.23",
        "100.64.12.7",
        "51.15.200.3",
        "2a00:1450:4001:82b::200e",
    ]
    ip_ctx = [
        "My server at {} is not responding to ping, what should I check?",
        "Why does ssh root@{} say connection refused?",
        "Block traffic from {} in iptables.",
        "The log shows repeated logins from {} - is this an attack?",
    ]
    for i, a in enumerate(ips):
        kinds = ["ip"]
        rows.append((ip_ctx[i % len(ip_ctx)].format(a), kinds))

    addresses = [
        "221B Baker Street",
        "1600 Pennsylvania Avenue",
        "742 Evergreen Terrace",
        "350 Fifth Avenue",
        "10 Downing Street",
        "1 Infinite Loop Drive",
        "4059 Mt Lee Drive",
        "12 Grimmauld Place",
        "31 Spooner Street",
        "500 W Madison St",
        "77 Massachusetts Ave",
        "1428 Elm Street",
    ]
    addr_ctx = [
        "I live at {}, Springfield. Write a letter to my neighbour about the fence.",
        "Deliver the package to {} before noon.",
        "Our new office is at {}; draft an announcement for staff.",
        "What is the nearest pharmacy to {}?",
    ]
    for i, a in enumerate(addresses):
        rows.append((addr_ctx[i % len(addr_ctx)].format(a), ["street_address"]))

    creds = [
        "https://admin:hunter2@intranet.example.com/dashboard",
        "postgres://app:s3cr3tPass@db.internal:5432/prod",
        "https://api.example.com/v1/items?api_key=AbC123xyz789",
        "https://example.com/reset?token=9f8e7d6c5b4a",
        "https://storage.example.net/file.pdf?X-Amz-Signature=abc123def&X-Amz-Expires=300",
        "https://maps.example.com/api?key=AIzaSyD-9tSrke72PouQMnMX",
        "ftp://user:pa55word@ftp.example.org/pub",
        "https://hooks.example.com/services/x?access_token=ghp_16C7e42F292c6912E7710c838347Ae178B4a",
        "mongodb+srv://root:toor@cluster0.mongodb.net/test",
        "https://app.example.io/login?user=bob&password=letmein",
        "redis://default:redispass@cache.example.com:6379",
        "https://example.com/callback?code=abc&client_secret=shhh123",
    ]
    cred_ctx = [
        "Why does {} return 403?",
        "Fix this config: DATABASE_URL={}",
        "Open {} and summarize the page.",
        "Is it safe to share the link {} with my team?",
    ]
    for i, c in enumerate(creds):
        rows.append((cred_ctx[i % len(cred_ctx)].format(c), ["credential_url"]))

    # strings with several kinds
    rows += [
        (
            "Jane Doe, 742 Evergreen Terrace, phone (555) 123-4567, email jane.doe@example.com: "
            "write her a birthday card.",
            ["email", "phone", "street_address"],
        ),
        (f"Refund card {group(card('4', 16, rng), ' ')} and email the receipt to ann@shop.com.", ["card", "email"]),
        ("Server 10.1.2.3 uses https://admin:pw123@10.1.2.3/panel, why is it slow?", ["credential_url", "ip"]),
        ("SSN 123-45-6789, tel +44 20 7946 0958. Fill in the visa form.", ["gov_id", "phone"]),
        ("Ship to 350 Fifth Avenue and call 646-555-0123 on arrival.", ["phone", "street_address"]),
        ("Log: user alice@corp.example.com logged in from 192.0.2.77 at 10:02.", ["email", "ip"]),
        ("Please remember: SSN 457-55-5462, card " + card("5", 16, rng) + ", PIN not needed.", ["card", "gov_id"]),
        ("Webhook https://hooks.example.com/in?token=xyz123abc sends from 203.0.113.9.", ["credential_url", "ip"]),
        ("Text +1 650 555 0101 or write to 1 Hacker Way, Menlo Park.", ["phone", "street_address"]),
        ("Email li.wei@example.cn or call +86 10 6552 9988 about the order.", ["email", "phone"]),
    ]

    negatives = [
        "Upgrade from Python 3.11.4 to 3.12.1 and list the breaking changes.",
        "What changed between version 2.4.0 and 2.10.3 of numpy?",
        "Our app is at v1.2.3.4 build 5678; write release notes.",
        "The meeting is on 2024-01-15 at 10:30; write an agenda.",
        "Summarize events from 12/25/2023 to 01/05/2024.",
        "Born 1987-06-30, died 2021-11-02: write an obituary for my grandfather.",
        "Convert 23:59:59 UTC to Pacific time.",
        "The laptop costs $1,299.99 and the monitor $349.00; is the bundle at $1,599 a deal?",
        "Price list: 4 x 12.50 = 50.00 EUR, plus 19% VAT.",
        "Our revenue grew from 1,234,567 to 2,345,678 dollars; write a press release.",
        "My order number is 1234 5678 9012 3456, where is my package?",
        "Tracking code 9400 1000 0000 0000 0000 00: when will it arrive?",
        "Is 4111 1111 1111 1112 a valid test card number?",
        "The serial is 1234-5678-9012-3456; register the product.",
        "Account 0000 0000 0000 0000 shows no balance.",
        "ISBN 978-3-16-148410-0: find reviews of this book.",
        "Calculate 123456789 * 987654321.",
        "Write a poem about the number 3.14159265358979.",
        "Visit https://www.wikipedia.org/wiki/Alan_Turing and summarize it.",
        "Compare https://docs.python.org/3/library/re.html with the regex docs on MDN.",
        "Fetch https://example.com/search?q=cats&page=2 and list the titles.",
        "Go to https://github.com/openai/gpt-2 and explain the README.",
        "Read http://news.ycombinator.com/item?id=123456 and give the top comments.",
        "Explain what git@github.com:user/repo.git means in a clone command.",
        "In Python, what does the @property decorator do?",
        "Write a tweet with the hashtag #AI and mention @OpenAI.",
        "Why does 10.5 + 0.25 = 10.75 in floating point but 0.1 + 0.2 != 0.3?",
        "The ratio is 3:2 and the score was 21-17; write a match report.",
        "Room 101 on floor 3 of building 4.5 is booked.",
        "Set the timeout to 3000 ms and retry 5 times.",
        "Version 10.0.19045.3693 of Windows crashes on startup.",
        "Chrome 120.0.6099.109 shows a blank page.",
        "Explain the subnet mask notation /24 and CIDR ranges in general.",
        "Translate 'call me maybe' into French.",
        "My phone is broken, write an insurance claim.",
        "Write a story set on Baker Street in Victorian London.",
        "Describe the architecture of Fifth Avenue buildings.",
        "List 5 famous streets in Paris.",
        "I walked 12 miles down the road yesterday; write a diary entry.",
        "The 3 Little Pigs built houses; retell it in 100 words.",
        "Summarize chapter 12 of War and Peace.",
        "Give me 10 ideas for a birthday party.",
        "Solve x^2 - 5x + 6 = 0.",
        "What is 2^64 - 1?",
        "Convert 255.255 degrees to radians.",
        "The coordinates are 40.7128, -74.0060: what city is this?",
        "Population 8,336,817 in 2022; write a fact sheet about New York.",
        "Model numbers: RTX-4090, i9-13900K, DDR5-6000; build me a PC.",
        "Use the HTTP status codes 200, 301, 404 and 500 in a quiz.",
        "Explain semantic versioning with examples like 1.0.0, 1.1.0 and 2.0.0-beta.1.",
        "Phone numbers in the US have 10 digits; explain the format.",
        "What is an IP address and how does DHCP assign one?",
        "Explain how credit card numbers use the Luhn algorithm.",
        "Write SQL: SELECT * FROM users WHERE id = 42 AND age > 18;",
        "git commit -m 'fix bug 1234' && git push origin main",
        "docker run -p 8080:80 nginx:1.25.3",
        "Listen on port 0.0.0.0:8000 for the dev server? Explain binding.",
        "CSS color #FF5733 vs rgb(255, 87, 51): are they the same?",
        "Compute the SHA-256 of 'hello world'.",
        "The hex value 0xDEADBEEF in decimal is?",
        "Write a limerick about a cat named Mr. Whiskers.",
        "Rewrite this: 'we shipped 1,000,000 units in Q3 2023'.",
        "Date format dd-mm-yyyy like 15-01-2024 or mm/dd/yy like 01/15/24?",
        "The train leaves at 7.45 and arrives at 9.15.",
        "A 1.5 kg cake needs 250 g of sugar and 3 eggs.",
        "Steps 1-2-3: mix, bake, serve.",
        "Score: 98.6 out of 100; temperature 37.0 C.",
        "Generate 5 fake product SKUs like AB-1234-XY.",
        "Explain RFC 5322 email address syntax without examples.",
        "Write a haiku about the 405 freeway at rush hour.",
        "Item #55512 costs 34.99; what is 15% off?",
        "Lottery numbers 4 8 15 16 23 42: are they lucky?",
        "What happened in 1969 and 1989?",
        "Kafka topic partitions 0-11, replication factor 3.",
        "Use the API endpoint https://api.example.com/v1/users?limit=10&offset=20.",
        "Download https://cdn.example.com/assets/logo.png?v=3 and describe it.",
        "Look at https://example.com/docs#token-auth for how tokens work.",
        "The Unicode code point U+1F600 is which emoji?",
        "The flight UA 857 departs at 13:05 from gate 12B.",
        "Call 911 in an emergency: write a poster for kids.",
        "Dial 0800 and then your PIN to access voicemail; explain to grandma.",
        "My zip code area has 30,000 people; plan a campaign.",
        "Explain the 80/20 rule with three examples.",
        "Write a function returning 555 for input 123.",
        "Matrix [[1, 2], [3, 4]] times [[5, 6], [7, 8]].",
        "IPv4 has 4 octets like a.b.c.d; explain private ranges.",
        "Is 256.300.1.1 a valid IPv4 address?",
        "Version 1.2.3.4.5 of the firmware bricked my router.",
        "The recipe serves 4-6 people and takes 45-60 minutes.",
        "Track 07 on album 2 of the 1998 remaster.",
        "Bitcoin block 840000 halved the reward to 3.125 BTC.",
        "The dimensions are 1920x1080 at 60 Hz.",
        "Name 3 streets in London that appear in Monopoly.",
        "Write a product description for the Avenue 5 handbag.",
        "Summarize the court case Roe v. Wade (1973).",
        "On Main Street there are 12 shops; write a story about them.",
        "Explain PEP 8 and PEP 20.",
        "What does the error code 0x80070005 mean?",
        "Average speed = 120 km / 1.5 h = 80 km/h.",
        "I have 2 cats, 3 dogs and 14 fish.",
        "Translate 'My email is private' into Spanish.",
        "Write an email to my boss asking for a day off.",
        "How do I find my IP address on Windows?",
        "A password should have 12 characters; suggest rules.",
        "Explain OAuth access tokens and refresh tokens.",
        "Set the netmask to 255.255.255.0 on the new router.",
        "Why does my app only answer on 127.0.0.1 and not from other machines?",
        "Bind the service to ::1 for local testing.",
        "Explain the difference between 0.0.0.0 and localhost.",
        "In C++, std::vector<int> v; what does v.at(3) do?",
        "Write a Rust snippet using std::collections::HashMap.",
        "Format the number 5551234567 as currency with 2 decimals.",
        "Our support line is open 9-5 on weekdays; write an auto-reply.",
        "The invoice INV-2024-000123 totals 4,500.00 USD.",
        "Flight time 11h 45m, distance 9,612 km.",
        "She scored 4111 points, then 1111 more; what is the total?",
        "Reference 3782 822463 10006 was printed on the box; what brand is it?",
        "Explain the format AB123456C used by the UK without giving a real one.",
        "Summarize the Apollo 11 transcript from 20 July 1969.",
        "List the 50 US states and their capitals.",
        "What does HTTP 418 mean?",
        "Write a cover letter for a job at 3M.",
        "The patch moves the API from /v2/users/42 to /v3/users/42.",
        "Use the regex \\d{3}-\\d{2}-\\d{4} to validate form input; explain it.",
        "Pi to 20 digits is 3.14159265358979323846.",
    ]
    rows += [(n, []) for n in negatives]

    out = Path(__file__).with_name("labelled.jsonl")
    with out.open("w", encoding="utf-8") as handle:
        for text, kinds in rows:
            handle.write(json.dumps({"text": text, "kinds": sorted(kinds)}, ensure_ascii=False) + "\n")
    print(f"{len(rows)} strings, {sum(1 for _, k in rows if k)} with PII, written to {out}")


if __name__ == "__main__":
    main()
