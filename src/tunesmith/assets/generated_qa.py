"""facts-qa: a GENERATED extractive question answering set (SQuAD v2 style), made here from templates.

No real QA data set ships in any registry package, so this one is written by a seeded program.
It is honest synthetic data: good for checking that QA fine-tuning works end to end and for
comparing methods, not a stand-in for SQuAD's difficulty.

How it is made (all from one seed, so every machine gets the same bytes):
- A paragraph is about one subject: a company, a person or a town. Its facts (a company's
  founding year, founder, head office, staff, product; a person's birth date, hometown, employer,
  profession, award year; a town's population, river, charter year, mayor, twin town) are
  written into sentences drawn from several paraphrases per fact type, in shuffled order.
- Each paragraph has distractors, so the answer is never "the only date in the text": a second
  subject of the same kind (a rival firm, a friend, a neighbouring town) with facts of the same
  types, plus noise sentences that add another value of every kind a question asks for.
- Values are unique within a paragraph (no value inside another, no year twice), so each answer
  occurs exactly once in its context.
- Questions come from several templates per fact type. Validation and test use HELD-OUT question
  templates that train never uses, and names (people, towns, firms, rivers) from pools disjoint
  from train's and from each other's, so a model must read rather than recall.
- Five questions a paragraph; in half of the paragraphs one of them asks for a fact of the subject
  that the paragraph leaves out while stating it for the other subject: 10% unanswerable.
Files: train/validation/test.jsonl, one {"id", "question", "context", "answers"} object a line,
answers [{"text", "answer_start"}] or [] for no answer. Contexts are 60-250 words.
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

SEED = 20240917
GENERATOR_VERSION = "1"  # bump whenever the output changes, so cached copies are rebuilt
SPLIT_QUESTIONS = {"train": 3000, "validation": 300, "test": 500}
QUESTIONS_PER_PARAGRAPH = 5
SPLIT_NUMBER = {"train": 0, "validation": 1, "test": 2}
MIN_WORDS, MAX_WORDS = 60, 250
YEAR_RANGES = {"founded": (1850, 2015), "charter": (1150, 1890)}  # firms are modern, town charters old

# Name pools: [train, validation, test], disjoint word for word, so held-out names are new to the model.
FIRST_NAMES = [
    "Amara Bastian Celeste Dariusz Elif Fenna Gideon Hanna Idris Jovana Kasimir Leontine Matthias Nadia Oskar Priya Quentin "
    "Rosalind Soren Tamsin Ulrich Vera Wendell Ximena Yusuf Zofia Anselm Brigitta Cormac Delphine Emeka Farida Gunnar Helga "
    "Ignatius Jasmina Konrad Lucinda Mateo Nerys",
    "Octavia Piotr Rafaela Sigrun Teodor Undine Valentin Wilhelmina Yara Zoltan",
    "Agnieszka Benedikt Clementine Dmitri Eleanor Florian Greta Horatio Ingrid Jerome Katarina Lysander"]
SURNAMES = [
    "Abernathy Brandt Castellano Dufresne Ekwueme Falkenrath Gallagher Haverkamp Ishikawa Jablonski Kowalczyk Lindqvist Moreau "
    "Nakagawa Okonkwo Pellegrini Quiroga Rasmussen Szabo Thorvaldsen Umarov Vasquez Wojcik Yilmaz Zielinski Achterberg "
    "Bjornsson Carvalho Delacroix Eriksen Fontaine Grabowski Hallstrom Iordanou Jaramillo Kuznetsov Lombardi Mbeki Novak Oyelaran",
    "Petrakis Quast Rautio Salvatore Tanaka Uribe Valdivia Westergaard Yamamoto Zamora",
    "Albrecht Bancroft Cifuentes Dragomir Esposito Fairweather Gundersen Hollander Ivanova Jorgensen Kaminski Lachance"]
TOWNS = [
    "Dunmoor Kelvale Ashcombe Brightwater Corrowby Dellsworth Elmstead Fallowmere Glenhollow Harrowfield Ironbridge Kestrelton "
    "Larkhaven Millbrook Northwick Oakhurst Pennymoor Quarrington Ravensholt Stonebury Thornvale Underhill Valemouth Westmarch "
    "Yarrowby Zellfort Alderwick Briarton Coldspring Drummore Eastcliff Fernhall Greywell Hollinsby Inverlee Kingsmere Lowenburg "
    "Marrowdale Netherby Orrinford",
    "Redgrave Saltmarsh Tillingham Upperton Vexley Whitlock Yewfield Zennor Amberlow Blackridge",
    "Carrickmore Dovecote Evenwood Foxbourne Gildersome Heathmoor Ilsington Kettlewell Lindisfell Moorcastle Nettlecombe Oldcastle"]
FIRMS = [
    "Brimco Calderis Dynavo Erelon Fyntra Galvex Halcyra Iskren Jorvell Kynetra Lumora Mavrik Nexolia Orbiton Pyrelle Quintara "
    "Rovana Sylvex Tarvona Ulmera Vantrix Wexlan Xyvora Yestra Aldrona Brevik Corvane Dravon Elvatra Fennix Helvio Ostrev",
    "Istrava Jentara Korvell Lavrene Morvix Nyvara Olvenne Pravix",
    "Quorvel Revana Strovix Tenvara Uvelle Vorska Wyntra Xandrel Zentrix Gavrosh"]
RIVERS = [
    "Kessel Amberline Brennock Calla Dorran Elsk Farrow Gorran Hessel Istel Jarrow Kilver Lune Marran Nessock Orwen Pell "
    "Quenby Rillock Sarn",
    "Ulla Verrin Wendle Ysolde Zennick Brisk",
    "Corran Delling Esk Fenwick Garnock Hollack"]
FIRM_SUFFIXES = "Systems Labs Foods Motors Textiles Publishing Robotics Energy Instruments Ceramics".split()
PRODUCTS = ["electric bicycles", "solar panels", "frozen dumplings", "hearing aids", "wooden toys", "industrial pumps",
            "weather balloons", "organic fertiliser", "ceramic tiles", "laboratory glassware", "cargo drones", "wool blankets",
            "garden tools", "marine engines", "printing presses", "smart thermostats"]
PROFESSIONS = ["marine biologist", "civil engineer", "violinist", "architect", "botanist", "sculptor", "economist", "glassblower",
               "cartographer", "pastry chef", "geologist", "novelist", "surgeon", "astronomer", "translator"]
MONTHS = "January February March April May June July August September October November December".split()

# Every fact a paragraph can state: "subject-kind fact value-kind", then its sentence paraphrases
# (say), the question templates train uses (ask) and the held-out ones of validation and test.
FACT_TABLE = """
company founded year
    say: {s} was founded in {v}. | {s} opened its doors in {v}. | Founded in {v}, {s} started out in a rented garage. | The history of {s} begins in {v}, the year it was founded.
    ask: When was {s} founded? | In what year was {s} established? | What year did {s} open its doors?
    held out: Which year saw the founding of {s}? | {s} has existed since what year?
company founder person
    say: {s} was started by {v}. | The founder of {s} is {v}. | {v} founded {s} after leaving university.
    ask: Who founded {s}? | Who started {s}? | Who is the founder of {s}?
    held out: Which person set up {s}? | {s} was created by whom?
company office town
    say: {s} has its headquarters in {v}. | The head office of {s} is in {v}. | {s} is based in {v}. | From its base in {v}, {s} serves customers across the country.
    ask: Where is {s} headquartered? | In which town is the head office of {s}? | Where is {s} based?
    held out: What town is home to the headquarters of {s}? | {s} runs its business from which place?
company staff quantity
    say: {s} employs {v} people. | {s} has a workforce of {v}. | Today {v} people work for {s}. | With {v} employees, {s} is a major local employer.
    ask: How many people does {s} employ? | How many employees does {s} have? | What is the size of the workforce of {s}?
    held out: How large is the staff of {s}? | {s} has how many workers?
company product product
    say: {s} makes {v}. | {s} is best known for its {v}. | The main product of {s} is {v}. | Most of the revenue of {s} comes from {v}.
    ask: What does {s} make? | What is {s} best known for producing? | What is the main product of {s}?
    held out: Which goods does {s} manufacture? | {s} earns most of its money from selling what?
person born date
    say: {s} was born on {v}. | Born on {v}, {s} grew up in a large family. | Records show that {s} was born on {v}.
    ask: When was {s} born? | On what date was {s} born? | What is the date of birth of {s}?
    held out: {s} was born on which day? | What was the birth date of {s}?
person hometown town
    say: {s} was born in {v}. | {s} comes from {v}. | {v} is the hometown of {s}.
    ask: Where does {s} come from? | What is the hometown of {s}? | In which town was {s} born?
    held out: Which town is {s} originally from? | {s} was raised in what place?
person employer company
    say: {s} works for {v}. | {s} is employed by {v}. | For many years {s} has worked at {v}. | {v} hired {s} straight out of school.
    ask: Who does {s} work for? | Which company employs {s}? | Where does {s} work?
    held out: What firm is {s} employed at? | {s} draws a salary from which company?
person profession profession
    say: {s} is {art} {v}. | By profession, {s} is {art} {v}. | {s} trained as {art} {v}.
    ask: What is the profession of {s}? | What does {s} do for a living? | What is the job of {s}?
    held out: In what line of work is {s}? | {s} earns a living as what?
person award year
    say: {s} received a national award in {v}. | In {v}, {s} was honoured with a national prize. | {s} won a major prize in {v}.
    ask: When did {s} receive a national award? | In what year was {s} honoured with a prize? | What year did {s} win a major prize?
    held out: {s} was given an award in which year? | Which year brought {s} a national honour?
town population quantity
    say: {s} has a population of {v}. | About {v} people live in {s}. | {s} is home to {v} residents. | The last census counted {v} inhabitants in {s}.
    ask: What is the population of {s}? | How many people live in {s}? | How many residents does {s} have?
    held out: {s} is home to how many people? | What headcount did the census give for {s}?
town river river
    say: The {v} flows through {s}. | {s} lies on the banks of the {v}. | {s} was built where the {v} bends to the east.
    ask: Which river flows through {s}? | What river is {s} on? | On the banks of which river does {s} lie?
    held out: What is the name of the river at {s}? | {s} sits beside which river?
town charter year
    say: {s} received its town charter in {v}. | {s} was granted a charter in {v}. | In {v}, {s} officially became a town.
    ask: When did {s} receive its town charter? | In what year was {s} granted a charter? | What year did {s} officially become a town?
    held out: {s} became a chartered town in which year? | Which year marks the official founding of {s} as a town?
town mayor person
    say: The mayor of {s} is {v}. | {v} serves as mayor of {s}. | {s} is governed by its mayor, {v}.
    ask: Who is the mayor of {s}? | Who serves as mayor of {s}? | Who leads {s} as mayor?
    held out: Which person governs {s}? | {s} has whom as its mayor?
town twin town
    say: {s} is twinned with {v}. | {s} has a partnership with the town of {v}. | A twinning agreement links {s} with {v}.
    ask: Which town is {s} twinned with? | What is the twin town of {s}? | Which town has a partnership with {s}?
    held out: {s} shares a twinning agreement with which town? | With what town is {s} partnered?
"""


def parse_fact_table(text: str) -> dict[str, dict[str, tuple[str, list[str], list[str], list[str]]]]:
    """FACT_TABLE as {subject kind: {fact: (value kind, paraphrases, train templates, held-out templates)}}."""
    facts: dict = {}
    lines = text.strip().splitlines()
    for head, say, ask, held in zip(lines[0::4], lines[1::4], lines[2::4], lines[3::4]):
        kind, fact, value_kind = head.split()
        alternatives = [line.split(":", 1)[1].strip().split(" | ") for line in (say, ask, held)]
        facts.setdefault(kind, {})[fact] = (value_kind, *alternatives)
    return facts


FACTS = parse_fact_table(FACT_TABLE)

INTROS = {"company": ["{s} is a privately owned business.", "{s} is a company with a long history."],
          "person": ["{s} is a respected figure in the region.", "{s} is well known in local circles."],
          "town": ["{s} is a town in a quiet valley.", "{s} is a small town in the hills."]}
BRIDGES = {"company": ["A rival firm, {o}, competes in the same market.", "The closest competitor of {s} is {o}."],
           "person": ["A former classmate, {o}, followed a similar path.", "{o} is a longtime friend of {s}."],
           "town": ["The neighbouring town of {o} lies a short drive away.", "Not far from {s} is the town of {o}."]}
FILLERS = {"company": ["{s} has grown steadily over the years.", "Analysts describe {s} as a careful and conservative business.",
                       "The company publishes a short annual report.", "Staff at {s} often praise its friendly culture.",
                       "Its offices are open to visitors on weekdays.", "The firm has avoided large debts."],
           "person": ["{s} is known for a quiet sense of humour.", "Friends describe {s} as patient and curious.",
                      "{s} enjoys long walks in the countryside.", "Several interviews with {s} have appeared in magazines.",
                      "{s} rarely speaks about private matters.", "Colleagues value the careful work of {s}."],
           "town": ["{s} has a small but busy market square.", "Many of the old houses in {s} are built of grey stone.",
                    "Tourists come to {s} mainly in summer.", "The streets of {s} are narrow and winding.",
                    "A weekly market is held in the centre.", "The surrounding hills are popular with walkers."]}
COMMON_FILLERS = ["The region has a mild climate for most of the year.", "Historians have written several books about the area.",
                  "Local people tend to be proud of their long traditions and like to talk about them with visitors.",
                  "Over the last decade the surrounding district has changed a great deal, with new roads and new houses.",
                  "A small museum nearby keeps letters, photographs and maps from earlier times."]
# noise: another value of a kind, in a sentence that answers none of the questions
NOISE = {"year": ["A severe flood struck the region in {v}.", "The local railway line closed in {v}."],
         "date": ["A regional festival took place on {v}.", "A storm hit the coast on {v}."],
         "person": ["The journalist {v} once wrote a long article about {s}.", "A documentary about {s} was narrated by {v}."],
         "town": ["A regular bus service connects the area with {v}.", "The nearest airport is in {v}."],
         "company": ["The printing firm {v} produced a booklet about {s}.", "A brochure about {s} was designed by the agency {v}."],
         "quantity": ["The local library holds {v} books.", "Around {v} visitors came to the regional fair last year."],
         "product": ["A nearby workshop produces {v}.", "A trade fair in the area showed {v}."],
         "profession": ["{s} once shared a flat with {art} {v}.", "A neighbour of {s} works as {art} {v}."],
         "river": ["The {v} runs some miles to the south.", "Anglers prefer the quieter {v}."]}


def pool(lists: list[str], split: str) -> list[str]:
    return lists[SPLIT_NUMBER[split]].split()


def held_out_names(split: str) -> list[str]:
    """Every name word a split's paragraphs can use (train's never appear in validation or test)."""
    return [w for lists in (FIRST_NAMES, SURNAMES, TOWNS, FIRMS, RIVERS) for w in pool(lists, split)]


def question_templates(split: str) -> list[str]:
    """The question templates a split draws from: train's, or the held-out ones."""
    held_out = split != "train"
    return [t for kind in FACTS.values() for fact in kind.values() for t in fact[3 if held_out else 2]]


class Paragraph:
    """One paragraph under construction: its values (unique, none inside another) and sentences."""

    def __init__(self, rng: random.Random, split: str):
        self.rng, self.split = rng, split
        self.used: list[str] = []
        self.used_kinds: list[str] = []
        self.sentences: list[tuple[str, str, dict]] = []  # (template, subject, slots)

    def fresh(self, kind: str, years: tuple[int, int] | None = None) -> str:
        for _ in range(1000):
            value = self.draw(kind, years)
            value_years = re.findall(r"\b\d{4}\b", value)
            # two people sharing a first name or surname would make "Who ...?" answers ambiguous
            words = set(value.split()) if kind == "person" else set()
            if any(value in u or u in value or any(y in u for y in value_years) or words & set(u.split()) for u in self.used):
                continue
            self.used.append(value)
            self.used_kinds.append(kind)
            return value
        raise RuntimeError(f"could not draw a fresh {kind}")  # a generator bug, never user input

    def draw(self, kind: str, years: tuple[int, int] | None) -> str:
        rng, split = self.rng, self.split
        if kind == "person":
            return f"{rng.choice(pool(FIRST_NAMES, split))} {rng.choice(pool(SURNAMES, split))}"
        if kind == "town":
            return rng.choice(pool(TOWNS, split))
        if kind == "company":
            return f"{rng.choice(pool(FIRMS, split))} {rng.choice(FIRM_SUFFIXES)}"
        if kind == "river":
            return f"{rng.choice(pool(RIVERS, split))} River"
        if kind == "year":
            return str(rng.randint(*(years or (1850, 2020))))
        if kind == "date":
            day, month, year = rng.randint(1, 28), rng.choice(MONTHS), rng.randint(*(years or (1900, 1985)))
            return f"{day} {month} {year}" if rng.random() < 0.5 else f"{month} {day}, {year}"
        if kind == "quantity":
            return f"{rng.randint(12, 4800) * 10:,}"
        return rng.choice(PRODUCTS if kind == "product" else PROFESSIONS)

    def add(self, template: str, subject: str, **slots) -> None:
        self.sentences.append((template, subject, slots))

    def render(self) -> tuple[str, dict]:
        """The context text and, for each (subject, fact) sentence, its value's (text, start)."""
        parts, spans, at = [], {}, 0
        for template, subject, slots in self.sentences:
            value = slots.get("v", "")
            fill = {"s": subject, "o": slots.get("o", ""), "art": "an" if value[:1] in "aeiou" else "a"}
            head, _, tail = template.partition("{v}")
            sentence = head.format(**fill)
            if "v" in slots:
                if "fact" in slots:
                    spans[(subject, slots["fact"])] = (value, at + len(sentence))
                sentence += value + tail.format(**fill)
            parts.append(sentence)
            at += len(sentence) + 1
        return " ".join(parts), spans


def draw_values(p: Paragraph, kind: str, wanted: list[str]) -> dict[str, str]:
    """One subject's values, in the fixed fact order so that a prize never comes before a birth."""
    values = {}
    for fact in FACTS[kind]:
        if fact not in wanted:
            continue
        if fact == "award":
            low = int(values["born"][-4:]) + 20 if "born" in values else 1930
            values[fact] = p.fresh("year", (low, min(low + 50, 2023)))
        else:
            values[fact] = p.fresh(FACTS[kind][fact][0], YEAR_RANGES.get(fact))
    return values


def make_paragraph(rng: random.Random, split: str, number: int, kind: str, unanswerable: bool) -> list[dict]:
    """One paragraph's context and its QUESTIONS_PER_PARAGRAPH questions (one unanswerable if asked)."""
    facts = FACTS[kind]
    p = Paragraph(rng, split)
    subject, other = p.fresh(kind), p.fresh(kind)
    missing = rng.choice(list(facts)) if unanswerable else None
    other_facts = rng.sample([f for f in facts if f != missing], rng.randint(1, 3)) + ([missing] if missing else [])
    main_facts = [f for f in facts if f != missing]
    rng.shuffle(main_facts)
    rng.shuffle(other_facts)
    main_values, other_values = draw_values(p, kind, main_facts), draw_values(p, kind, other_facts)
    stated = [(subject, f, main_values[f]) for f in main_facts] + [(other, f, other_values[f]) for f in other_facts]
    p.add(rng.choice(INTROS[kind]), subject)
    for who, fact, value in stated:
        if who == other and fact == other_facts[0]:
            p.add(rng.choice(BRIDGES[kind]), subject, o=other)
        p.add(rng.choice(facts[fact][1]), who, v=value, fact=fact)
    answerable = [(who, fact) for who, fact, _ in stated]
    asked = rng.sample(answerable, QUESTIONS_PER_PARAGRAPH - (1 if missing else 0))
    # a noise value for every kind asked about that has no second value yet: never the only date
    for value_kind in sorted({facts[fact][0] for _, fact in asked} | ({facts[missing][0]} if missing else set())):
        if sum(facts[f][0] == value_kind for _, f, _ in stated) < 2:
            noise = (rng.choice(NOISE[value_kind]), subject, {"v": p.fresh(value_kind)})
            p.sentences.insert(rng.randint(1, len(p.sentences)), noise)
    fillers = FILLERS[kind] + COMMON_FILLERS
    rng.shuffle(fillers)
    wanted = rng.randint(0, len(fillers) - 2)
    while fillers and (wanted > 0 or len(" ".join(t for t, _, _ in p.sentences).split()) < MIN_WORDS + 5):
        p.sentences.insert(rng.randint(1, len(p.sentences)), (fillers.pop(), subject, {}))
        wanted -= 1
    context, spans = p.render()
    questions = [(who, fact, True) for who, fact in asked] + ([(subject, missing, False)] if missing else [])
    rng.shuffle(questions)
    records = []
    for q, (who, fact, has_answer) in enumerate(questions):
        template = rng.choice(facts[fact][3 if split != "train" else 2])
        answers = [{"text": spans[(who, fact)][0], "answer_start": spans[(who, fact)][1]}] if has_answer else []
        records.append({"id": f"facts-{split}-{number:04d}-{q}", "question": template.format(s=who), "context": context, "answers": answers,
                        "_meta": {"kind": kind, "fact": fact, "template": template, "subject": who,
                                  "value_kind": facts[fact][0], "values": list(zip(p.used_kinds, p.used)),
                                  "plausible_answer": None if has_answer else other_values[fact]}})
    return records


def generate_split(split: str, n_questions: int | None = None, seed: int = SEED) -> list[dict]:
    """The split's records, each with a private "_meta" (kind, fact, template, ...) for checks."""
    n_questions = SPLIT_QUESTIONS[split] if n_questions is None else n_questions
    rng = random.Random(seed * 10 + SPLIT_NUMBER[split])
    paragraphs = -(-n_questions // QUESTIONS_PER_PARAGRAPH)
    with_missing = set(rng.sample(range(paragraphs), paragraphs // 2))
    kinds = list(FACTS)
    records = []
    for number in range(paragraphs):
        records += make_paragraph(rng, split, number, kinds[number % len(kinds)], number in with_missing)
    return records[:n_questions]


def build_generated_qa(out: Path, seed: int = SEED) -> dict[str, Path]:
    """Write train/validation/test.jsonl into out; returns {split: path}. Same seed, same bytes."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split in SPLIT_QUESTIONS:
        lines = [json.dumps({k: v for k, v in r.items() if k != "_meta"}, ensure_ascii=False) for r in generate_split(split, seed=seed)]
        paths[split] = out / f"{split}.jsonl"
        paths[split].write_text("\n".join(lines) + "\n", encoding="utf-8", newline="\n")
    return paths


def build_facts_qa(archive: Path | None, out: Path) -> None:
    """The registry's build signature (archive, out); a generated set has no archive to read."""
    build_generated_qa(out)
