#!/usr/bin/env python3
"""Write the synthetic P-Soups sample: P1A.jsonl (JSON lines), P1B.json (JSON array) and
prompts.txt (one prompt per line, for configs that sample completions from prompts).

Same record layout as the real P-Soups reward-model files (`user_input`, `completion_a` =
preferred, `completion_b` = the other), but every text is made up here from templates: no real
P-Soups text is copied. P1A prefers the plain answer, P1B the technical one, so the two files
are opposing groups like the real P1A ("elementary school student") / P1B ("PhD student").

Run from the repository root: python3 tests/data/psoups/gen_sample.py
Standard library only; the output is deterministic.
"""
import json
import pathlib

OUT = pathlib.Path(__file__).resolve().parent

TOPICS = [
    ("the sky", "blue", "sunlight scatters off air", "Rayleigh scattering scales as the inverse fourth power of wavelength"),
    ("ice", "slippery", "a thin wet layer forms on top", "a premelted quasi-liquid layer lowers the friction coefficient"),
    ("bread", "rising", "yeast makes gas bubbles", "yeast fermentation releases carbon dioxide trapped by the gluten network"),
    ("magnets", "sticky", "they pull on some metals", "aligned electron spins in ferromagnetic domains produce a net field"),
    ("the moon", "changing shape", "we see different lit parts", "the phase follows the Sun-Earth-Moon elongation angle"),
    ("leaves", "green", "they hold a green colour called chlorophyll", "chlorophyll absorbs red and blue light and reflects green"),
    ("thunder", "loud", "lightning heats the air very fast", "rapid ohmic heating drives a supersonic shock wave"),
    ("rainbows", "curved", "light bends in raindrops", "minimum deviation near 42 degrees sets a conical locus"),
    ("soap", "cleaning", "it grabs grease and water", "amphiphilic surfactants form micelles around nonpolar molecules"),
    ("planes", "flying", "wings push air down", "circulation around the airfoil yields lift per the Kutta-Joukowski theorem"),
    ("the sea", "salty", "rivers carry salt into it", "weathering fluxes of ions accumulate while evaporation removes water"),
    ("hearts", "beating", "a tiny spark starts each beat", "sinoatrial pacemaker cells depolarise through funny currents"),
    ("volcanoes", "erupting", "hot rock pushes up from below", "exsolution of volatiles raises magma chamber overpressure"),
    ("batteries", "useful", "they store energy for later", "redox half-reactions at the electrodes set the cell potential"),
    ("stars", "twinkling", "moving air wiggles their light", "atmospheric turbulence causes scintillation via refractive index fluctuations"),
    ("cats", "purring", "their throat muscles buzz", "laryngeal muscles gate the glottis at roughly 25 to 150 hertz"),
    ("seasons", "changing", "Earth is tilted", "axial obliquity modulates insolation over the orbit"),
    ("bubbles", "round", "a ball shape needs the least skin", "surface tension minimises area for a fixed enclosed volume"),
    ("fireflies", "glowing", "they make light inside their bodies", "luciferase oxidises luciferin in an ATP-dependent reaction"),
    ("snowflakes", "six-sided", "water freezes in a hexagon pattern", "the hexagonal ice Ih lattice templates sixfold dendritic growth"),
    ("tides", "moving", "the moon pulls on the oceans", "the differential lunar gravitational potential raises two bulges"),
    ("vaccines", "protective", "they teach the body to fight germs", "antigen exposure induces memory B and T cell populations"),
    ("rust", "spreading", "iron meets water and air", "electrochemical oxidation forms hydrated iron oxides at anodic sites"),
    ("echoes", "repeating", "sound bounces back", "reflected acoustic waves return after a delay of twice the distance over c"),
    ("bees", "dancing", "they show friends where food is", "the waggle run encodes direction relative to the solar azimuth"),
    ("glaciers", "moving", "heavy ice slowly slides", "ice deforms by creep following Glen's flow law and basal sliding"),
    ("computers", "fast", "they do tiny steps very quickly", "pipelined processors retire several instructions per clock cycle"),
    ("owls", "quiet", "their feathers are soft", "serrated leading-edge feathers break up turbulent noise"),
    ("deserts", "cold at night", "dry air lets heat escape", "low humidity reduces downwelling longwave radiation"),
    ("popcorn", "popping", "water inside turns to steam", "pericarp rupture follows steam pressure near 135 psi"),
    ("earthquakes", "shaking", "rocks slip along cracks", "elastic rebound releases strain accumulated on locked faults"),
    ("muscles", "sore", "they get tiny tears", "eccentric loading causes myofibrillar microdamage and inflammation"),
    ("clouds", "floating", "their drops are very light", "droplet terminal velocities are tiny compared with updrafts"),
    ("onions", "making us cry", "they release a stinging gas", "syn-propanethial S-oxide irritates corneal nerve endings"),
    ("salt", "melting ice", "it makes water freeze at a colder point", "solutes cause freezing point depression proportional to molality"),
    ("chameleons", "changing colour", "their skin has tiny mirrors", "guanine nanocrystal lattices in iridophores tune reflected wavelengths"),
    ("coffee", "keeping us awake", "it blocks a sleepy signal", "caffeine antagonises adenosine A1 and A2A receptors"),
    ("rubber", "stretchy", "its long chains uncurl", "entropic elasticity of crosslinked polymer networks restores shape"),
    ("diamonds", "hard", "their atoms hold on tightly", "each carbon forms four sp3 covalent bonds in a rigid lattice"),
    ("whales", "singing", "they call to each other", "low-frequency vocalisations propagate through the SOFAR channel"),
]

QUESTIONS = [
    "Why is {t} {a}?",
    "Can you explain why {t} is {a}?",
    "What makes {t} {a}?",
    "How come {t} is {a}?",
]


def pair(i, topic, question):
    t, a, plain, technical = topic
    prompt = question.format(t=t, a=a)
    simple = f"Good question! It is because {plain}. Think of it like a game where everything has a job."
    expert = f"In short, {technical}; see the standard treatments of the underlying mechanism (item {i})."
    return prompt, simple, expert


def records(prefer_simple):
    out = []
    i = 0
    for question in QUESTIONS:
        for topic in TOPICS:
            prompt, simple, expert = pair(i, topic, question)
            a, b = (simple, expert) if prefer_simple else (expert, simple)
            out.append({"user_input": prompt, "completion_a": a, "completion_b": b})
            i += 1
    return out


def main():
    with open(OUT / "P1A.jsonl", "w", encoding="utf-8") as f:
        for r in records(prefer_simple=True):
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    with open(OUT / "P1B.json", "w", encoding="utf-8") as f:
        json.dump(records(prefer_simple=False), f, ensure_ascii=False, indent=1)
        f.write("\n")
    with open(OUT / "prompts.txt", "w", encoding="utf-8") as f:
        for i, topic in enumerate(TOPICS):
            t, a, _, _ = topic
            f.write(QUESTIONS[i % len(QUESTIONS)].format(t=t, a=a) + "\n")


if __name__ == "__main__":
    main()
