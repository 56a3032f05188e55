"""The project's own task suite for the precision quality gate: short factual prompts with accepted answers.

Each prompt goes through the model's real chat template (as ``/v1/chat/completions`` serves it) and is
answered greedily; an answer is correct when it contains one of the accepted strings as whole words
(case-insensitive). The prompts are ones a 135M instruct model answers right more often than not in
fp32, so that a quantized variant that degrades shows up as lost answers; the score is a comparison
with fp32 on the same machine, never an absolute bar.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    prompt: str
    accepted: tuple[str, ...]

    def correct(self, answer: str) -> bool:
        return any(re.search(rf"(?<![\w]){re.escape(a)}(?![\w])", answer, re.IGNORECASE) for a in self.accepted)


def _t(prompt: str, *accepted: str) -> Task:
    return Task(prompt, tuple(accepted))


TASKS: tuple[Task, ...] = (
    # capitals
    _t("What is the capital of France?", "Paris"),
    _t("What is the capital of Japan?", "Tokyo"),
    _t("What is the capital of Italy?", "Rome"),
    _t("What is the capital of Germany?", "Berlin"),
    _t("What is the capital of Spain?", "Madrid"),
    _t("What is the capital of the United Kingdom?", "London"),
    _t("What is the capital of Russia?", "Moscow"),
    _t("What is the capital of China?", "Beijing"),
    _t("What is the capital of Egypt?", "Cairo"),
    _t("What is the capital of South Korea?", "Seoul"),
    _t("What is the capital of Canada?", "Ottawa"),
    _t("What is the capital of Greece?", "Athens"),
    # science and nature
    _t("What is the largest planet in our solar system?", "Jupiter"),
    _t("Which planet is known as the Red Planet?", "Mars"),
    _t("Which planet is closest to the Sun?", "Mercury"),
    _t("What star is at the center of our solar system?", "Sun", "the Sun"),
    _t("What gas do plants absorb from the air?", "carbon dioxide", "CO2"),
    _t("What gas do humans need to breathe to live?", "oxygen"),
    _t("What is the chemical formula of water?", "H2O", "H₂O"),
    _t("What is the chemical symbol for gold?", "Au"),
    _t("What is the freezing point of water in degrees Celsius?", "0", "zero"),
    _t("What is the boiling point of water in degrees Celsius?", "100"),
    _t("What organ pumps blood through the human body?", "heart"),
    _t("What is the largest ocean on Earth?", "Pacific"),
    _t("What is the tallest mountain in the world?", "Everest"),
    _t("What is the longest river in Africa?", "Nile"),
    _t("What is the largest mammal on Earth?", "blue whale", "whale"),
    _t("What do bees make?", "honey"),
    _t("What is the fastest land animal?", "cheetah"),
    _t("What is the natural satellite of the Earth called?", "Moon", "the Moon"),
    # words, numbers, everyday knowledge
    _t("How many days are there in a week?", "seven", "7"),
    _t("How many legs does a spider have?", "eight", "8"),
    _t("How many continents are there on Earth?", "seven", "7"),
    _t("How many hours are in a day?", "24", "twenty-four", "twenty four"),
    _t("What is 2 plus 2?", "4", "four"),
    _t("What is the opposite of hot?", "cold"),
    _t("What is the opposite of up?", "down"),
    _t("What color is the sky on a clear day?", "blue"),
    _t("What color are ripe bananas?", "yellow"),
    _t("What color do you get by mixing blue and yellow?", "green"),
    _t("What is frozen water called?", "ice"),
    _t("What language is mainly spoken in Brazil?", "Portuguese"),
    _t("What language is mainly spoken in Mexico?", "Spanish"),
    # people and culture
    _t("Who wrote the play Romeo and Juliet?", "Shakespeare"),
    _t("Who painted the Mona Lisa?", "Leonardo", "da Vinci"),
    _t("Who developed the theory of relativity?", "Einstein"),
    _t("Who was the first president of the United States?", "Washington"),
    _t("In which country are the pyramids of Giza?", "Egypt"),
    _t("In which city is the Eiffel Tower?", "Paris"),
    _t("What is the currency of Japan?", "yen"),
)


def score(answers: list[str], tasks: tuple[Task, ...] = TASKS) -> float:
    """Share of ``tasks`` whose answer (same order) is correct."""
    return sum(t.correct(a) for t, a in zip(tasks, answers, strict=True)) / len(tasks)


def suite_digest(tasks: tuple[Task, ...] = TASKS) -> str:
    """Identifies the suite's content: a gate result is only reused for the same suite."""
    blob = json.dumps([[t.prompt, list(t.accepted)] for t in tasks])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
