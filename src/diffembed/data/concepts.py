"""A catalogue of concepts for the reasoning suite (ReasonAug-style problem -> concept retrieval).

Each :class:`Concept` is a theorem, algorithm, data structure or formula with a short reference
document and several word-problem templates. A problem never names its concept: solving it
needs the concept, and finding the concept needs that inference step. ``params`` draws the
numbers and nouns of one problem from a ``random.Random``, so problems vary in surface form
and values and are reproducible from a seed.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Params = Callable[[random.Random], dict[str, Any]]

PEOPLE = ("Ana", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hugo", "Iris", "Jonas")
TOWNS = ("Ashford", "Brook", "Cliffton", "Dunmore", "Eastvale", "Fernley", "Glenrock", "Harlow")


def _pick(rng: random.Random, seq: tuple[str, ...]) -> str:
    return seq[rng.randrange(len(seq))]


def _word(rng: random.Random) -> str:
    letters = "abcdefghiklmnoprstu"
    return "".join(letters[rng.randrange(len(letters))] for _ in range(rng.randint(5, 8)))


def _edges(rng: random.Random, n: int) -> str:
    towns = TOWNS[:n]
    parts = []
    for i in range(n - 1):
        parts.append(f"{towns[i]}-{towns[i + 1]} {rng.randint(2, 20)} km")
    for _ in range(n - 1):
        a, b = rng.sample(range(n), 2)
        parts.append(f"{towns[a]}-{towns[b]} {rng.randint(2, 30)} km")
    return ", ".join(parts)


@dataclass(frozen=True)
class Concept:
    """A concept with its reference document and problem templates."""

    id: str
    name: str
    category: str
    document: str
    templates: tuple[str, ...]
    params: Params
    aliases: tuple[str, ...] = ()

    def problem(self, rng: random.Random) -> str:
        """One problem: a random template filled with random parameters."""
        template = self.templates[rng.randrange(len(self.templates))]
        return template.format(**self.params(rng))


def _p_pythagoras(r: random.Random) -> dict[str, Any]:
    k = r.randint(1, 6)
    a, b, c = r.choice(((3, 4, 5), (5, 12, 13), (8, 15, 17), (7, 24, 25)))
    return {"a": a * k, "b": b * k, "c": c * k}


CONCEPTS: tuple[Concept, ...] = (
    Concept(
        "pythagorean-theorem",
        "Pythagorean theorem",
        "theorem",
        "Pythagorean theorem. In a right triangle the square of the hypotenuse (the side opposite "
        "the right angle) equals the sum of the squares of the two legs: c^2 = a^2 + b^2. It "
        "gives the missing side of any right triangle from the other two, the Euclidean distance "
        "between two points in the plane, and underlies the converse test for perpendicularity.",
        (
            "A ladder {c} feet long leans against a wall with its foot {a} feet from the wall. "
            "How high up the wall does it reach?",
            "A rectangular field is {a} m by {b} m. How long is the path running corner to corner?",
            "Starting from camp, {p} walks {a} km north and then {b} km east. How far is "
            "{p} from camp in a straight line?",
            "A TV screen is {a} inches wide and {b} inches tall. What is its diagonal size?",
        ),
        lambda r: {**_p_pythagoras(r), "p": _pick(r, PEOPLE)},
        ("pythagoras", "pythagorean"),
    ),
    Concept(
        "law-of-cosines",
        "Law of cosines",
        "theorem",
        "Law of cosines. For any triangle with sides a, b, c and angle C opposite c: "
        "c^2 = a^2 + b^2 - 2ab cos C. It generalizes the Pythagorean relation to triangles "
        "without a right angle and determines the third side from two sides and the included "
        "angle, or any angle from the three sides.",
        (
            "Two boats leave a harbour at the same time on courses {g} degrees apart, one "
            "travelling {x} km and the other {y} km. How far apart are they?",
            "A triangular garden has sides of {x} m and {y} m meeting at an angle of {g} "
            "degrees. How long is its third side?",
            "The hands of a clock are {x} cm and {y} cm long. How far apart are their tips "
            "when they make an angle of {g} degrees?",
        ),
        lambda r: {
            "x": r.randint(3, 40),
            "y": r.randint(3, 40),
            "g": r.choice((35, 50, 70, 110, 130)),
        },
        ("cosines", "cosine rule"),
    ),
    Concept(
        "herons-formula",
        "Heron's formula",
        "formula",
        "Heron's formula. The area of a triangle with side lengths a, b and c is "
        "sqrt(s(s-a)(s-b)(s-c)), where s = (a+b+c)/2 is the semiperimeter. No angle or height "
        "is needed: three lengths determine the area.",
        (
            "A triangular plot of land has sides of {a} m, {b} m and {c} m. How many square "
            "metres of turf are needed to cover it?",
            "A sail is cut as a triangle with edges {a} ft, {b} ft and {c} ft. How much "
            "canvas does it use?",
            "Three fence posts stand {a}, {b} and {c} yards apart pairwise. What area do the "
            "fences enclose?",
        ),
        lambda r: dict(
            zip(
                "abc",
                sorted(r.choice(((13, 14, 15), (5, 5, 6), (7, 8, 9), (9, 10, 17), (10, 13, 13)))),
                strict=True,
            )
        ),
        ("heron",),
    ),
    Concept(
        "quadratic-formula",
        "Quadratic formula",
        "formula",
        "Quadratic formula. The solutions of ax^2 + bx + c = 0 with a != 0 are "
        "x = (-b +/- sqrt(b^2 - 4ac)) / (2a). The discriminant b^2 - 4ac tells whether there "
        "are two real roots, one repeated root or two complex roots.",
        (
            "A ball is thrown upward so that its height after t seconds is {b}t - 5t^2 + {c} "
            "metres. When does it hit the ground?",
            "A rectangle has area {area} square cm and its length is {d} cm more than its width. "
            "What are its dimensions?",
            "For which values of x is x squared plus {b} times x equal to {c}?",
        ),
        lambda r: {
            "b": r.randint(5, 30),
            "c": r.randint(2, 60),
            "d": r.randint(2, 9),
            "area": r.randint(20, 200),
        },
        ("quadratic",),
    ),
    Concept(
        "arithmetic-series",
        "Arithmetic series sum",
        "formula",
        "Arithmetic series. A sequence with a constant difference d between consecutive terms "
        "has n-th term a + (n-1)d, and the sum of its first n terms is n(first + last)/2. "
        "Gauss's pairing argument: terms equidistant from the two ends add to the same total.",
        (
            "A theatre has {n} rows; the first row has {a} seats and each row has {d} more "
            "than the one in front. How many seats are there?",
            "{p} saves {a} dollars in week one and {d} dollars more each week than the week "
            "before. How much has {p} saved after {n} weeks?",
            "What do all the whole numbers from 1 to {big} add up to?",
        ),
        lambda r: {
            "n": r.randint(8, 40),
            "a": r.randint(5, 30),
            "d": r.randint(1, 6),
            "p": _pick(r, PEOPLE),
            "big": r.choice((100, 250, 500, 1000, 2024)),
        },
        ("arithmetic progression", "arithmetic series"),
    ),
    Concept(
        "geometric-series",
        "Geometric series sum",
        "formula",
        "Geometric series. A sequence whose consecutive terms have a constant ratio r has n-th "
        "term a r^(n-1); the sum of n terms is a(1 - r^n)/(1 - r) for r != 1, and the infinite "
        "sum converges to a/(1 - r) when |r| < 1.",
        (
            "A ball dropped from {h} m rebounds to {f}% of its previous height each time. What "
            "total distance does it travel before coming to rest?",
            "A chain letter is sent to {k} people, each of whom forwards it to {k} new people, "
            "and so on for {n} rounds. How many letters are sent in total?",
            "A chessboard-style reward doubles every day starting with {a} grains. How many "
            "grains are paid over {n} days?",
        ),
        lambda r: {
            "h": r.randint(2, 20),
            "f": r.choice((40, 50, 60, 75, 80)),
            "k": r.randint(2, 6),
            "n": r.randint(5, 12),
            "a": r.randint(1, 5),
        },
        ("geometric progression", "geometric series"),
    ),
    Concept(
        "compound-interest",
        "Compound interest",
        "finance",
        "Compound interest. A principal P earning an annual rate r compounded m times per year "
        "grows to P(1 + r/m)^(m t) after t years; with continuous compounding it grows to "
        "P e^(r t). Interest is earned on previously earned interest.",
        (
            "{p} deposits ${x} in an account paying {q}% a year, credited monthly. What is the "
            "balance after {t} years?",
            "How long does it take an investment to double at {q}% annual growth, reinvested "
            "every year?",
            "A town of {x} people grows by {q}% each year. What will its population be in {t} "
            "years?",
        ),
        lambda r: {
            "p": _pick(r, PEOPLE),
            "x": r.randint(1, 90) * 1000,
            "q": r.choice((2, 3, 4, 5, 6, 7, 8)),
            "t": r.randint(3, 30),
        },
        ("compound interest",),
    ),
    Concept(
        "simple-interest",
        "Simple interest",
        "finance",
        "Simple interest. Interest charged only on the original principal: I = P r t, where P "
        "is the principal, r the rate per period and t the number of periods; the amount owed "
        "is P(1 + r t). Unlike compounding, earlier interest earns nothing.",
        (
            "{p} lends a friend ${x} at {q}% per year, with the charge computed only on the "
            "original sum. How much is repaid after {t} years?",
            "A bond pays {q}% of its ${x} face value each year and the coupons are not "
            "reinvested. How much does it pay out in {t} years?",
            "What yearly rate turns ${x} into ${y} over {t} years if the charge is always "
            "figured on the starting amount?",
        ),
        lambda r: {
            "p": _pick(r, PEOPLE),
            "x": r.randint(2, 50) * 100,
            "y": r.randint(51, 90) * 100,
            "q": r.randint(2, 12),
            "t": r.randint(2, 9),
        },
        ("simple interest",),
    ),
    Concept(
        "present-value",
        "Present value and discounting",
        "finance",
        "Present value. A cash flow C received t periods from now is worth C / (1 + r)^t today "
        "at discount rate r; the net present value of a project is the sum of its discounted "
        "cash flows minus the initial outlay. Money now is worth more than the same sum later.",
        (
            "Would you rather have ${x} today or ${y} in {t} years if you can earn {q}% a year "
            "elsewhere?",
            "A machine costs ${x} and will save ${s} a year for {t} years. Is it worth buying "
            "when money costs {q}% a year?",
            "How much must be set aside now to pay a ${y} bill due in {t} years, at {q}% a year?",
        ),
        lambda r: {
            "x": r.randint(10, 50) * 100,
            "y": r.randint(55, 99) * 100,
            "s": r.randint(5, 30) * 100,
            "t": r.randint(2, 10),
            "q": r.randint(3, 12),
        },
        ("present value", "discounting", "net present value"),
    ),
    Concept(
        "annuity-payment",
        "Loan amortization (annuity payment)",
        "finance",
        "Annuity payment. A loan of principal P repaid in n equal instalments at rate r per "
        "period needs a payment of P r / (1 - (1 + r)^(-n)). Each instalment pays the period's "
        "interest first and the rest reduces the outstanding balance (amortization).",
        (
            "{p} borrows ${x} for a car at {q}% a year and repays it in equal monthly amounts "
            "over {t} years. What is the monthly amount?",
            "A mortgage of ${x} runs {t} years at {q}% yearly interest. What is the fixed "
            "monthly bill?",
            "What equal yearly deposit, earning {q}%, repays a ${x} debt in {t} years?",
        ),
        lambda r: {
            "p": _pick(r, PEOPLE),
            "x": r.randint(5, 400) * 1000,
            "q": r.randint(2, 9),
            "t": r.randint(3, 30),
        },
        ("annuity", "amortization", "amortisation"),
    ),
    Concept(
        "combinations",
        "Binomial coefficient (combinations)",
        "theorem",
        "Combinations. The number of ways to choose k objects from n distinct objects when order "
        "does not matter is the binomial coefficient C(n, k) = n! / (k! (n-k)!). It counts "
        "subsets, lattice paths and the coefficients of (x + y)^n.",
        (
            "A committee of {k} is to be formed from {n} volunteers. How many different "
            "committees are possible?",
            "How many different {k}-topping pizzas can be ordered from a menu of {n} toppings?",
            "In how many ways can a robot move from one corner of a {k} by {n} grid to the "
            "opposite corner taking only right and up steps?",
            "A lottery draws {k} numbers out of {n}. How many different tickets are possible?",
        ),
        lambda r: {"k": r.randint(2, 6), "n": r.randint(7, 49)},
        ("combination", "binomial coefficient", "choose"),
    ),
    Concept(
        "permutations",
        "Permutations",
        "theorem",
        "Permutations. The number of orderings of n distinct objects is n!; the number of "
        "ordered arrangements of k objects chosen from n is n! / (n-k)!. Order matters, unlike "
        "in combinations.",
        (
            "In how many different orders can {n} runners finish a race if there are no ties?",
            "A club of {n} members elects a president, a secretary and a treasurer. How many "
            "outcomes are possible?",
            "How many different {k}-letter codes with no repeated letter can be made from "
            "{n} letters?",
        ),
        lambda r: {"n": r.randint(5, 12), "k": r.randint(2, 4)},
        ("permutation", "factorial"),
    ),
    Concept(
        "pigeonhole-principle",
        "Pigeonhole principle",
        "theorem",
        "Pigeonhole principle. If more than n objects are placed into n boxes, some box holds "
        "at least two; more generally some box holds at least ceil(N / n) of N objects. It "
        "proves existence without construction.",
        (
            "A drawer holds socks of {c} colours. How many must be pulled out in the dark to "
            "be sure of a matching pair?",
            "Show that among any {m} people at least two share a birth month.",
            "A school has {n} students. At least how many of them must share the same birthday?",
        ),
        lambda r: {"c": r.randint(2, 9), "m": 13, "n": r.randint(400, 2000)},
        ("pigeonhole",),
    ),
    Concept(
        "inclusion-exclusion",
        "Inclusion-exclusion principle",
        "theorem",
        "Inclusion-exclusion principle. The size of a union of sets is the sum of their sizes "
        "minus the sizes of all pairwise intersections plus the triple intersections, and so "
        "on with alternating signs: |A u B| = |A| + |B| - |A n B|.",
        (
            "In a class of {n} pupils, {a} play football, {b} play chess and {c} do both. How "
            "many do neither?",
            "How many integers from 1 to {big} are divisible by {x} or by {y}?",
            "A survey found {a} people read the morning paper, {b} the evening paper and {c} "
            "both. How many read at least one?",
        ),
        lambda r: {
            "n": r.randint(40, 60),
            "a": r.randint(15, 30),
            "b": r.randint(10, 25),
            "c": r.randint(3, 9),
            "big": r.choice((100, 500, 1000)),
            "x": r.choice((3, 4, 6)),
            "y": r.choice((5, 7, 10)),
        },
        ("inclusion-exclusion", "inclusion exclusion"),
    ),
    Concept(
        "bayes-theorem",
        "Bayes' theorem",
        "theorem",
        "Bayes' theorem. P(A|B) = P(B|A) P(A) / P(B): the probability of a hypothesis after "
        "seeing evidence equals the likelihood of the evidence under the hypothesis times the "
        "prior, normalized by the total probability of the evidence. It reverses conditional "
        "probabilities and explains base-rate effects.",
        (
            "A disease affects {d}% of people. A test detects it {s}% of the time but also "
            "flags {f}% of healthy people. If someone tests positive, how likely are they ill?",
            "An email filter sees that {s}% of junk mail contains a certain word, as does {f}% "
            "of normal mail; {d}% of mail is junk. A message contains the word: is it junk?",
            "Factory A makes {d}% of the bolts with a {f}% defect rate and factory B the rest "
            "with a {s}% defect rate. A defective bolt is found. Which factory probably made it?",
        ),
        lambda r: {
            "d": r.choice((1, 2, 5, 10, 20, 30)),
            "s": r.choice((80, 90, 95, 99)),
            "f": r.choice((1, 2, 5, 10)),
        },
        ("bayes", "bayesian", "posterior"),
    ),
    Concept(
        "binomial-distribution",
        "Binomial distribution",
        "theorem",
        "Binomial distribution. The number of successes in n independent trials each succeeding "
        "with probability p has P(X = k) = C(n, k) p^k (1-p)^(n-k), mean np and variance "
        "np(1-p).",
        (
            "A fair coin is tossed {n} times. What is the chance of exactly {k} heads?",
            "A basketball player makes {q}% of free throws. What is the probability of making "
            "at least {k} of {n} attempts?",
            "Each of {n} light bulbs fails within a year with probability {q}%. How likely is "
            "it that exactly {k} fail?",
        ),
        lambda r: {
            "n": r.randint(5, 20),
            "k": r.randint(1, 5),
            "q": r.choice((5, 10, 20, 60, 70, 80)),
        },
        ("binomial distribution", "bernoulli trial"),
    ),
    Concept(
        "linearity-of-expectation",
        "Linearity of expectation",
        "theorem",
        "Linearity of expectation. The expected value of a sum of random variables is the sum of "
        "their expected values, E[X + Y] = E[X] + E[Y], whether or not they are independent. "
        "Writing a count as a sum of indicator variables makes many averages easy.",
        (
            "{n} guests check their hats and receive them back at random. On average how many "
            "get their own hat?",
            "A die is rolled {n} times. What is the expected total of the faces?",
            "Each of {n} independent switches is on with probability 1/{k}. How many are on, "
            "on average?",
        ),
        lambda r: {"n": r.randint(5, 100), "k": r.randint(2, 6)},
        ("expected value", "expectation"),
    ),
    Concept(
        "euclidean-algorithm",
        "Euclidean algorithm (greatest common divisor)",
        "algorithm",
        "Euclidean algorithm. The greatest common divisor of two integers is found by replacing "
        "the larger by its remainder on division by the smaller until the remainder is zero; "
        "the last non-zero remainder is the gcd. gcd(a, b) = gcd(b, a mod b).",
        (
            "What is the largest square tile that can cover a {x} cm by {y} cm floor exactly, "
            "without cutting?",
            "{x} apples and {y} oranges are to be packed into identical bags with no fruit left "
            "over. What is the largest number of bags possible?",
            "Reduce the fraction {x}/{y} to lowest terms.",
        ),
        lambda r: {"x": r.randint(12, 400) * 2, "y": r.randint(12, 400) * 3},
        ("euclid", "greatest common divisor", "gcd"),
    ),
    Concept(
        "least-common-multiple",
        "Least common multiple",
        "theorem",
        "Least common multiple. The smallest positive integer divisible by both a and b is "
        "lcm(a, b) = a b / gcd(a, b). Events that repeat with periods a and b coincide again "
        "after lcm(a, b) units.",
        (
            "One bus leaves the depot every {x} minutes and another every {y} minutes. They "
            "leave together at 8:00. When do they next leave together?",
            "Two lighthouses flash every {x} and {y} seconds. How often do they flash at the "
            "same moment?",
            "Hot dogs come in packs of {x} and buns in packs of {y}. What is the fewest hot "
            "dogs you can buy to have exactly one bun each?",
        ),
        lambda r: {"x": r.randint(4, 30), "y": r.randint(4, 30)},
        ("least common multiple", "lcm"),
    ),
    Concept(
        "modular-exponentiation",
        "Modular exponentiation and Fermat's little theorem",
        "algorithm",
        "Modular exponentiation. a^e mod m is computed by repeated squaring in O(log e) "
        "multiplications, reducing mod m at each step. Fermat's little theorem: for prime p not "
        "dividing a, a^(p-1) = 1 (mod p), so exponents may be reduced mod p-1.",
        (
            "What is the last digit of {a} raised to the power {e}?",
            "What remainder does {a}^{e} leave when divided by {p}?",
            "Today is Monday. What day of the week will it be {a}^{e} days from now?",
        ),
        lambda r: {
            "a": r.randint(2, 19),
            "e": r.randint(100, 9999),
            "p": r.choice((7, 11, 13, 17)),
        },
        ("modular exponentiation", "fermat"),
    ),
    Concept(
        "chinese-remainder-theorem",
        "Chinese remainder theorem",
        "theorem",
        "Chinese remainder theorem. If moduli m1, ..., mk are pairwise coprime, the system "
        "x = a_i (mod m_i) has exactly one solution modulo m1 m2 ... mk, which can be built "
        "from modular inverses of the partial products.",
        (
            "A number leaves remainder {a} when divided by 3, {b} when divided by 5 and {c} "
            "when divided by 7. What is the smallest such number?",
            "Soldiers lined up in rows of 3 leave {a} over, in rows of 5 leave {b} over and in "
            "rows of 7 leave {c} over. How many soldiers are there, at least?",
            "Eggs counted in threes leave {a}, in fives leave {b}, in sevens leave {c}. What is "
            "the fewest eggs in the basket?",
        ),
        lambda r: {"a": r.randint(0, 2), "b": r.randint(0, 4), "c": r.randint(0, 6)},
        ("chinese remainder",),
    ),
    Concept(
        "sieve-of-eratosthenes",
        "Sieve of Eratosthenes",
        "algorithm",
        "Sieve of Eratosthenes. To list all primes up to n, write the integers from 2 to n and "
        "repeatedly take the smallest unmarked number as prime and mark its multiples from its "
        "square upward. It runs in O(n log log n) time.",
        (
            "List every whole number below {n} that has no divisors other than 1 and itself.",
            "How many numbers between 2 and {n} cannot be written as a product of two smaller "
            "whole numbers?",
            "Write a program that finds all numbers up to {n} divisible only by 1 and "
            "themselves, as fast as possible.",
        ),
        lambda r: {"n": r.choice((50, 100, 200, 1000, 10**6))},
        ("eratosthenes", "sieve"),
    ),
    Concept(
        "divisor-count",
        "Number of divisors from prime factorization",
        "theorem",
        "Divisor counting. If n = p1^e1 p2^e2 ... pk^ek is the prime factorization of n, n has "
        "(e1+1)(e2+1)...(ek+1) positive divisors, and their sum is the product of "
        "(p^(e+1) - 1)/(p - 1) over its prime powers.",
        (
            "In how many ways can {n} chairs be arranged into a rectangular block of equal rows?",
            "How many whole numbers divide {n} exactly?",
            "A locker numbered {n} is toggled by every student whose number divides {n}. How "
            "many times is it toggled?",
        ),
        lambda r: {"n": r.choice((36, 48, 60, 72, 96, 100, 120, 144, 180, 360, 720))},
        ("divisor function", "number of divisors", "prime factorization"),
    ),
    Concept(
        "binary-search",
        "Binary search",
        "algorithm",
        "Binary search. In a sorted array, compare the target with the middle element and "
        "discard the half that cannot contain it; repeat. It finds an element or its insertion "
        "point in O(log n) comparisons and, applied to a monotone predicate, finds the "
        "boundary where the predicate changes.",
        (
            "I am thinking of a whole number between 1 and {n}. You may ask whether it is "
            "larger than a number you name. How many questions do you need at most?",
            "A phone book has {n} names in alphabetical order. How many lookups are needed to "
            "find one name in the worst case?",
            "Find the first bad version among {n} software releases if every release after a "
            "bad one is also bad, using as few checks as possible.",
        ),
        lambda r: {"n": r.choice((100, 1000, 10**6, 2**20, 5000))},
        ("binary search", "bisection"),
    ),
    Concept(
        "dijkstra",
        "Dijkstra's algorithm",
        "algorithm",
        "Dijkstra's algorithm. Computes minimum-cost paths from a source vertex in a graph with "
        "non-negative edge weights: repeatedly settle the unsettled vertex with the smallest "
        "tentative distance (using a priority queue) and relax its outgoing edges. "
        "O((V + E) log V).",
        (
            "Roads connect towns with these lengths: {edges}. What is the quickest driving "
            "route from {s} to {t}?",
            "Given flight connections with ticket prices between airports, find the cheapest "
            "way to fly from {s} to every other airport.",
            "A network has links with known delays: {edges}. What is the smallest delay for a "
            "packet from {s} to {t}?",
        ),
        lambda r: {"edges": _edges(r, 5), "s": TOWNS[0], "t": TOWNS[4]},
        ("dijkstra",),
    ),
    Concept(
        "breadth-first-search",
        "Breadth-first search",
        "algorithm",
        "Breadth-first search. Explores a graph level by level from a start vertex using a FIFO "
        "queue, visiting all vertices at distance k before any at distance k+1. In an "
        "unweighted graph it yields the fewest-edge path to every reachable vertex in O(V + E).",
        (
            "What is the fewest number of moves a chess knight needs to go from one corner of "
            "an {n} by {n} board to the opposite corner?",
            "In a maze drawn on a {n} by {n} grid of open and blocked squares, how many steps "
            "does the shortest escape from the centre take?",
            "Change the word COLD into WARM one letter at a time, every step being a real word. "
            "What is the least number of steps?",
        ),
        lambda r: {"n": r.randint(5, 12)},
        ("breadth-first", "bfs"),
    ),
    Concept(
        "topological-sort",
        "Topological sorting",
        "algorithm",
        "Topological sort. Orders the vertices of a directed acyclic graph so that every edge "
        "goes from an earlier to a later vertex: repeatedly output a vertex with no incoming "
        "edges (Kahn's algorithm) or use depth-first finishing times reversed. A cycle makes "
        "such an order impossible.",
        (
            "Course {a} requires course {b}, {b} requires {c}, and {d} requires both {a} and "
            "{c}. In what order can a student take all four?",
            "When getting dressed, socks go before shoes, trousers before shoes and the shirt "
            "before the tie. Give an order that respects all these constraints.",
            "A build has {n} modules, each listing the modules it depends on. In what order "
            "should they be compiled?",
        ),
        lambda r: {
            **dict(
                zip("abcd", r.sample(["CS101", "CS102", "MA201", "PH110", "ST150"], 4), strict=True)
            ),
            "n": r.randint(5, 50),
        },
        ("topological", "toposort"),
    ),
    Concept(
        "minimum-spanning-tree",
        "Minimum spanning tree (Kruskal's and Prim's algorithms)",
        "algorithm",
        "Minimum spanning tree. A set of edges connecting all vertices of a weighted graph with "
        "least total weight and no cycle. Kruskal's algorithm adds edges in increasing weight "
        "order unless they close a cycle (checked with union-find); Prim's grows one tree from "
        "a vertex.",
        (
            "Cables can be laid between these villages at these costs: {edges}. What is the "
            "cheapest way to connect every village?",
            "Which pipes should be built so that all {n} houses get water at the lowest total "
            "pipe length?",
            "An island has {n} towns and a price for every possible road. Build roads so any "
            "town can reach any other, spending as little as possible.",
        ),
        lambda r: {"edges": _edges(r, 5), "n": r.randint(5, 30)},
        ("spanning tree", "kruskal", "prim"),
    ),
    Concept(
        "union-find",
        "Disjoint-set union (union-find)",
        "data structure",
        "Union-find. A disjoint-set forest stores a partition of elements; find returns a "
        "representative of an element's set and union merges two sets. With path compression "
        "and union by rank both run in near-constant amortized time (inverse Ackermann).",
        (
            "{n} people are at a party and we are told pairs who know each other. Friendship "
            "groups are formed by chains of acquaintance. How many groups are there?",
            "Pixels of an image are joined when adjacent and of equal colour. Count the "
            "separate regions as pairs of joined pixels arrive one by one.",
            "Computers are wired together one cable at a time. After each cable, report "
            "whether computers {a} and {b} can now talk to each other.",
        ),
        lambda r: {"n": r.randint(10, 1000), "a": r.randint(1, 9), "b": r.randint(10, 99)},
        ("union-find", "disjoint set", "disjoint-set"),
    ),
    Concept(
        "knapsack",
        "0/1 knapsack dynamic programming",
        "algorithm",
        "0/1 knapsack. Given items with weights and values and a capacity W, choose a subset of "
        "maximum value whose weight fits. Dynamic programming over (item, remaining capacity): "
        "best[i][w] = max(best[i-1][w], best[i-1][w - w_i] + v_i); O(nW).",
        (
            "A hiker can carry {w} kg and has items weighing {ws} kg worth {vs} points. Which "
            "items should go in the rucksack?",
            "With a budget of ${w} and projects costing {ws} thousand with returns {vs}, "
            "which projects should be funded, each at most once?",
            "A thief can carry {w} pounds. The loot weighs {ws} pounds and is worth {vs} "
            "dollars. What is the most valuable haul?",
        ),
        lambda r: {
            "w": r.randint(10, 30),
            "ws": ", ".join(str(r.randint(2, 12)) for _ in range(5)),
            "vs": ", ".join(str(r.randint(5, 60)) for _ in range(5)),
        },
        ("knapsack",),
    ),
    Concept(
        "longest-common-subsequence",
        "Longest common subsequence",
        "algorithm",
        "Longest common subsequence. The longest sequence appearing in both strings in order, "
        "not necessarily contiguously, found by dynamic programming: L[i][j] = L[i-1][j-1] + 1 "
        "if a_i = b_j, else max(L[i-1][j], L[i][j-1]). O(mn). It underlies diff tools.",
        (
            "What is the longest string of letters that appears, in order but not necessarily "
            "adjacent, in both {x} and {y}?",
            "Two DNA strands read {x} and {y}. How many bases long is the longest shared "
            "pattern if gaps are allowed?",
            "Compare two versions of a file line by line and find the largest set of lines "
            "kept unchanged and in the same order.",
        ),
        lambda r: {
            "x": "".join(r.choice("ACGT") for _ in range(8)),
            "y": "".join(r.choice("ACGT") for _ in range(9)),
        },
        ("common subsequence", "lcs"),
    ),
    Concept(
        "edit-distance",
        "Edit distance (Levenshtein)",
        "algorithm",
        "Edit distance. The Levenshtein distance between two strings is the minimum number of "
        "single-character insertions, deletions and substitutions turning one into the other, "
        "computed by dynamic programming over prefixes in O(mn).",
        (
            "How many single-letter changes, insertions or deletions turn {x} into {y}?",
            "A spell checker must suggest the dictionary word closest to the typo {x}. How "
            "should closeness be measured and computed?",
            "What is the fewest keystroke corrections needed to change {x} into {y}?",
        ),
        lambda r: {"x": _word(r), "y": _word(r)},
        ("levenshtein", "edit distance"),
    ),
    Concept(
        "coin-change",
        "Coin change dynamic programming",
        "algorithm",
        "Coin change. With coin denominations d1..dk, the fewest coins summing to an amount A "
        "(or the number of ways to make A) is computed by dynamic programming over amounts: "
        "best[a] = 1 + min over coins c of best[a - c]. Greedy choice fails for some coin sets.",
        (
            "Using coins worth {c}, what is the fewest coins that add up to exactly {a} cents?",
            "In how many ways can {a} cents be paid with coins of {c} cents?",
            "Stamps come in {c} cent values. What is the smallest number of stamps for a {a} "
            "cent letter?",
        ),
        lambda r: {
            "c": ", ".join(str(x) for x in sorted(r.sample([1, 2, 3, 4, 5, 7, 10, 20, 25], 3))),
            "a": r.randint(11, 99),
        },
        ("coin change",),
    ),
    Concept(
        "kadane",
        "Maximum subarray (Kadane's algorithm)",
        "algorithm",
        "Kadane's algorithm. The contiguous subarray with the largest sum is found in one pass: "
        "keep the best sum ending at the current position, max(x, best_here + x), and the best "
        "seen overall. O(n) time, O(1) memory.",
        (
            "A stock's daily price changes are {xs}. Over which run of consecutive days was "
            "the total gain largest?",
            "Given the sequence {xs}, which stretch of adjacent numbers has the biggest total?",
            "A shop's daily profit or loss was {xs}. What is the best total over any unbroken "
            "period?",
        ),
        lambda r: {"xs": ", ".join(str(r.randint(-9, 9)) for _ in range(10))},
        ("kadane", "maximum subarray"),
    ),
    Concept(
        "merge-sort-inversions",
        "Merge sort and inversion counting",
        "algorithm",
        "Merge sort. Split the list in halves, sort each recursively and merge the two sorted "
        "halves in linear time, for O(n log n) overall; during the merge, each element taken "
        "from the right half counts the remaining left-half elements as inversions.",
        (
            "How many pairs in the list {xs} are out of order, that is, a larger number before "
            "a smaller one?",
            "Two judges ranked the same {n} contestants. How many pairs of contestants do they "
            "order differently?",
            "What is the minimum number of swaps of neighbouring elements that sorts {xs}?",
        ),
        lambda r: {
            "xs": ", ".join(str(x) for x in r.sample(range(1, 30), 8)),
            "n": r.randint(5, 20),
        },
        ("merge sort", "inversion"),
    ),
    Concept(
        "heap",
        "Binary heap (priority queue)",
        "data structure",
        "Binary heap. A complete binary tree stored in an array where each parent is no larger "
        "(min-heap) than its children; insert and extract-min take O(log n) and peek O(1). It "
        "implements priority queues, selection of the k largest items and heapsort.",
        (
            "A stream of {n} scores arrives one at a time. Keep track of the {k} highest seen "
            "so far using little memory.",
            "An emergency room treats the most urgent patient first as new patients keep "
            "arriving. How should the waiting list be stored?",
            "Merge {k} sorted lists of numbers into one sorted list efficiently.",
        ),
        lambda r: {"n": r.choice((10**4, 10**6, 10**9)), "k": r.randint(3, 100)},
        ("heap", "priority queue"),
    ),
    Concept(
        "hash-table",
        "Hash table",
        "data structure",
        "Hash table. Stores key-value pairs in an array indexed by a hash of the key, resolving "
        "collisions by chaining or open addressing; lookup, insertion and deletion take O(1) "
        "expected time. It underlies sets, dictionaries and duplicate detection.",
        (
            "Given {n} numbers and a target {t}, find two of them that add up to {t} in one pass.",
            "Check whether any of {n} uploaded files is an exact duplicate of another, quickly.",
            "Count how many times each word occurs in a book of {n} words.",
        ),
        lambda r: {"n": r.choice((1000, 10**5, 10**6)), "t": r.randint(10, 999)},
        ("hash table", "hash map", "hashing"),
    ),
    Concept(
        "stack",
        "Stack (last in, first out)",
        "data structure",
        "Stack. A last-in first-out collection with push and pop at one end in O(1). It checks "
        "nesting (matching brackets), evaluates postfix expressions, implements undo and "
        "drives depth-first traversal and recursion.",
        (
            "Is the string {s} correctly nested, with every opening bracket closed in the "
            "right order?",
            "Evaluate the expression written as {e} where each operator follows its two operands.",
            "A text editor must undo the last {n} edits in reverse order. How should it store "
            "the edits?",
        ),
        lambda r: {
            "s": "".join(r.choice(["()", "[]", "{}", "(", "]"]) for _ in range(5)),
            "e": f"{r.randint(2, 9)} {r.randint(2, 9)} + {r.randint(2, 9)} *",
            "n": r.randint(3, 50),
        },
        ("stack", "lifo"),
    ),
    Concept(
        "sliding-window-deque",
        "Sliding window maximum with a monotonic deque",
        "data structure",
        "Monotonic deque. To report the maximum of every window of k consecutive elements, keep "
        "a double-ended queue of indices whose values decrease; drop indices that leave the "
        "window from the front and smaller values from the back. Each element enters and "
        "leaves once: O(n).",
        (
            "For the temperatures {xs}, what is the highest value in every run of {k} "
            "consecutive days?",
            "A sensor reports {n} readings per hour. Report the peak of the last {k} readings "
            "after each new one, in constant amortized time.",
            "Print the largest number in each block of {k} adjacent numbers of {xs}.",
        ),
        lambda r: {
            "xs": ", ".join(str(r.randint(1, 40)) for _ in range(9)),
            "k": r.randint(2, 4),
            "n": r.randint(60, 3600),
        },
        ("deque", "sliding window"),
    ),
    Concept(
        "trie",
        "Trie (prefix tree)",
        "data structure",
        "Trie. A tree whose edges are labelled with characters so that each root-to-node path "
        "spells a prefix; words sharing a prefix share a path. Insertion and lookup take time "
        "proportional to the word length, and all words with a given prefix are in one subtree.",
        (
            "A phone's keyboard suggests completions for whatever the user has typed so far "
            "from a list of {n} words. How should the words be stored?",
            "Given {n} strings, how many of them start with {w}?",
            "Find the longest beginning shared by all of the words {a}, {b} and {c}.",
        ),
        lambda r: {
            "n": r.choice((1000, 50000, 10**6)),
            "w": _word(r)[:3],
            "a": "interstellar",
            "b": "internet",
            "c": "interval",
        },
        ("trie", "prefix tree"),
    ),
    Concept(
        "fibonacci-recurrence",
        "Fibonacci numbers and linear recurrences",
        "theorem",
        "Fibonacci recurrence. F(n) = F(n-1) + F(n-2) with F(1) = F(2) = 1. Many counts obey it "
        "because the last step splits cases into two smaller instances; it is computed "
        "iteratively in O(n), by matrix powers in O(log n), or by Binet's closed form.",
        (
            "You can climb a staircase {n} steps at a time or two at a time. In how many "
            "different ways can you reach the top of a {n}-step staircase?",
            "A {n} by 2 strip is to be covered with 1 by 2 dominoes. How many tilings are there?",
            "Rabbits pairs mature after a month and then produce one new pair monthly. Starting "
            "with one newborn pair, how many pairs are there after {n} months?",
        ),
        lambda r: {"n": r.randint(5, 30)},
        ("fibonacci",),
    ),
    Concept(
        "catalan-numbers",
        "Catalan numbers",
        "theorem",
        "Catalan numbers. C(n) = (2n)! / ((n+1)! n!) = 1, 1, 2, 5, 14, 42, ... count balanced "
        "strings of n pairs of brackets, binary trees with n internal nodes, triangulations of "
        "a polygon with n+2 sides and monotone lattice paths that never cross the diagonal.",
        (
            "How many ways are there to write {n} pairs of parentheses so that they are "
            "correctly matched?",
            "In how many ways can a convex polygon with {m} sides be cut into triangles by "
            "non-crossing diagonals?",
            "How many differently shaped search trees can hold the keys 1 to {n}?",
        ),
        lambda r: {"n": r.randint(3, 10), "m": r.randint(5, 12)},
        ("catalan",),
    ),
    Concept(
        "stars-and-bars",
        "Stars and bars",
        "theorem",
        "Stars and bars. The number of ways to write n as an ordered sum of k non-negative "
        "integers, i.e. to put n identical objects into k distinct boxes, is C(n + k - 1, k - 1); "
        "with every box non-empty it is C(n - 1, k - 1).",
        (
            "In how many ways can {n} identical sweets be shared among {k} children?",
            "How many solutions in non-negative whole numbers does x1 + ... + x{k} = {n} have?",
            "A shop sells {k} flavours of doughnut. How many different boxes of {n} doughnuts "
            "can be bought?",
        ),
        lambda r: {"n": r.randint(5, 20), "k": r.randint(3, 6)},
        ("stars and bars",),
    ),
    Concept(
        "derangements",
        "Derangements",
        "theorem",
        "Derangements. A permutation with no fixed point; there are !n = n! (1 - 1/1! + 1/2! - ... "
        "+ (-1)^n/n!) of n elements, close to n!/e, so the chance that a random permutation has "
        "no fixed point tends to 1/e.",
        (
            "{n} friends put their names in a hat and each draws one. What is the chance that "
            "nobody draws their own name?",
            "A secretary puts {n} letters into {n} addressed envelopes at random. In how many "
            "ways can every letter go to a wrong envelope?",
            "{n} students exchange homework so that no one grades their own. How many "
            "exchanges are possible?",
        ),
        lambda r: {"n": r.randint(4, 12)},
        ("derangement",),
    ),
    Concept(
        "newtons-second-law",
        "Newton's second law",
        "physics",
        "Newton's second law. The net force on a body equals its mass times its acceleration, "
        "F = m a; equivalently force is the rate of change of momentum. With friction or other "
        "forces, sum all forces before dividing by mass.",
        (
            "A {m} kg cart is pushed with a steady {f} N on a frictionless floor. How quickly "
            "does its speed increase?",
            "What push is needed to speed up a {m} kg crate by {a} m/s every second?",
            "A rocket of mass {m} tonnes produces {f} kN of thrust. What is its upward "
            "acceleration ignoring air, taking gravity into account?",
        ),
        lambda r: {"m": r.randint(2, 90), "f": r.randint(10, 900), "a": r.randint(1, 9)},
        ("newton's second law", "second law"),
    ),
    Concept(
        "conservation-of-energy",
        "Conservation of mechanical energy",
        "physics",
        "Conservation of energy. Without friction, kinetic plus potential energy is constant: "
        "m g h + m v^2 / 2 stays the same, so a body falling from height h reaches speed "
        "sqrt(2 g h), independent of its mass.",
        (
            "A stone is dropped from a {h} m cliff. How fast is it moving when it hits the water?",
            "A roller coaster starts at rest at the top of a {h} m hill. How fast is it going "
            "at the bottom if friction is negligible?",
            "How high can a ball rise if it is thrown straight up at {v} m/s?",
        ),
        lambda r: {"h": r.randint(5, 120), "v": r.randint(5, 40)},
        ("conservation of energy", "kinetic energy", "potential energy"),
    ),
    Concept(
        "ohms-law",
        "Ohm's law",
        "physics",
        "Ohm's law. The current through a conductor is proportional to the voltage across it: "
        "V = I R. Resistances in series add; in parallel their reciprocals add. Power "
        "dissipated is V I = I^2 R.",
        (
            "A {v} V battery drives current through a {r} ohm heater. How many amperes flow?",
            "A bulb draws {i} A from the {v} V mains. What is its resistance?",
            "Two resistors of {r} and {s} ohms are connected side by side to a {v} V supply. "
            "What total current is drawn?",
        ),
        lambda r: {
            "v": r.choice((3, 6, 9, 12, 24, 120, 230)),
            "r": r.randint(2, 200),
            "s": r.randint(2, 200),
            "i": r.randint(1, 10),
        },
        ("ohm",),
    ),
    Concept(
        "uniform-acceleration",
        "Equations of uniformly accelerated motion",
        "physics",
        "Kinematic equations. Under constant acceleration a: v = u + a t, s = u t + a t^2 / 2 "
        "and v^2 = u^2 + 2 a s, where u is the initial velocity, v the final velocity and s "
        "the displacement after time t.",
        (
            "A car travelling at {u} m/s brakes with a constant deceleration of {a} m/s^2. How "
            "far does it go before stopping?",
            "A train starts from rest and reaches {v} m/s in {t} s. How far did it travel?",
            "A sprinter speeds up evenly from rest to {v} m/s over {s} m. How long did it take?",
        ),
        lambda r: {
            "u": r.randint(10, 40),
            "a": r.randint(2, 9),
            "v": r.randint(8, 60),
            "t": r.randint(4, 60),
            "s": r.randint(10, 60),
        },
        ("kinematics", "uniform acceleration"),
    ),
    Concept(
        "ideal-gas-law",
        "Ideal gas law",
        "physics",
        "Ideal gas law. For an ideal gas P V = n R T, with pressure P, volume V, amount n in "
        "moles, the gas constant R = 8.314 J/(mol K) and absolute temperature T. At fixed "
        "amount, P V / T is constant (combined gas law).",
        (
            "A sealed tyre at {p} kPa is heated from {t1} C to {t2} C. What is the new pressure?",
            "A balloon holds {v} litres at sea level. What is its volume where the air pressure "
            "is half as large, at the same temperature?",
            "How many moles of air are in a {v} litre flask at {p} kPa and {t1} C?",
        ),
        lambda r: {
            "p": r.randint(100, 300),
            "t1": r.randint(0, 25),
            "t2": r.randint(30, 80),
            "v": r.randint(1, 50),
        },
        ("ideal gas", "boyle", "charles"),
    ),
    Concept(
        "exponential-decay",
        "Exponential decay and half-life",
        "formula",
        "Exponential decay. A quantity decreasing at a rate proportional to itself follows "
        "N(t) = N0 e^(-lambda t) = N0 (1/2)^(t / T), where T = ln 2 / lambda is the half-life, "
        "the time for half of it to remain.",
        (
            "A radioactive sample of {m} g has a half-life of {t} years. How much is left after "
            "{u} years?",
            "A drug's concentration in the blood halves every {t} hours. When does it fall to "
            "{q}% of the initial dose?",
            "Carbon in a bone has {q}% of the carbon-14 of living tissue. How old is it if the "
            "half-life is 5730 years?",
        ),
        lambda r: {
            "m": r.randint(10, 500),
            "t": r.randint(2, 30),
            "u": r.randint(10, 100),
            "q": r.choice((5, 10, 12, 25, 40)),
        },
        ("half-life", "exponential decay", "radioactive decay"),
    ),
    Concept(
        "littles-law",
        "Little's law",
        "theorem",
        "Little's law. In a stable queueing system the long-run average number of items in the "
        "system L equals the arrival rate lambda times the average time an item spends in it "
        "W: L = lambda W, whatever the arrival or service distributions.",
        (
            "A coffee shop serves {x} customers an hour and each stays {w} minutes on average. "
            "How many customers are inside at a typical moment?",
            "A web server handles {x} requests per second and always has about {n} in "
            "progress. How long does a request take on average?",
            "A warehouse holds {n} pallets on average and ships {x} a day. How long does a "
            "pallet sit in storage?",
        ),
        lambda r: {"x": r.randint(10, 500), "w": r.randint(5, 90), "n": r.randint(20, 2000)},
        ("little's law", "queueing"),
    ),
    Concept(
        "standard-deviation",
        "Variance and standard deviation",
        "formula",
        "Standard deviation. The variance of data is the mean squared deviation from the mean, "
        "and the standard deviation is its square root; for a sample, divide the sum of "
        "squared deviations by n - 1. It measures spread in the units of the data.",
        (
            "The test scores {xs} were recorded. How spread out are they around their average?",
            "Two machines fill bags; one gave weights {xs} grams. Quantify how consistent it is.",
            "Daily returns of a fund were {xs} percent. What is their volatility?",
        ),
        lambda r: {"xs": ", ".join(str(r.randint(40, 99)) for _ in range(6))},
        ("standard deviation", "variance"),
    ),
    Concept(
        "birthday-paradox",
        "Birthday problem (collision probability)",
        "theorem",
        "Birthday problem. Among n items drawn uniformly from N values, the probability that all "
        "are distinct is the product of (1 - i/N) for i < n, about exp(-n^2 / (2N)); a "
        "repeat becomes likely once n is near sqrt(N), e.g. 23 people for 365 days.",
        (
            "In a room of {n} people, how likely is it that two share a birthday?",
            "A system issues random {b}-bit identifiers. After how many identifiers does a "
            "duplicate become more likely than not?",
            "{n} people each pick a random number from 1 to {m}. What is the chance that two "
            "pick the same number?",
        ),
        lambda r: {
            "n": r.randint(10, 60),
            "b": r.choice((16, 32, 64)),
            "m": r.choice((100, 365, 1000)),
        },
        ("birthday", "collision"),
    ),
    Concept(
        "triangle-inequality",
        "Triangle inequality",
        "theorem",
        "Triangle inequality. In any triangle the sum of two sides exceeds the third: "
        "a + b > c for every labelling, and the length of one side is more than the difference "
        "of the other two. Three lengths form a triangle exactly when they satisfy it.",
        (
            "Can sticks of length {a} cm, {b} cm and {c} cm be joined at their ends to make a "
            "closed three-sided frame?",
            "Two sides of a triangle are {a} and {b}. Which whole-number lengths are possible "
            "for the third side?",
            "Town A is {a} km from B and B is {b} km from C. What are the nearest and farthest "
            "A can be from C?",
        ),
        lambda r: {"a": r.randint(2, 20), "b": r.randint(2, 20), "c": r.randint(2, 40)},
        ("triangle inequality",),
    ),
)


EVAL_FRACTION = 0.5


def concept_split(concept_id: str) -> str:
    """``"eval"`` or ``"finetune"``: the side of the catalogue a concept belongs to, from the
    sha256 of its id (like the corpus's document-level splits). The reasoning suite asks only
    about eval concepts and training pairs use only finetune concepts, so no evaluation
    document is ever a training positive or negative (the model must generalise to new
    concepts, as ReasonAug -> BRIGHT does)."""
    h = int(hashlib.sha256(f"concept:{concept_id}".encode()).hexdigest()[:8], 16) / 2**32
    return "eval" if h < EVAL_FRACTION else "finetune"


def concepts_of(split: str) -> tuple[Concept, ...]:
    """The concepts of one side of the split (``"eval"`` or ``"finetune"``), catalogue order."""
    if split not in ("eval", "finetune"):
        raise ValueError(f"split must be 'eval' or 'finetune', got {split!r}")
    return tuple(c for c in CONCEPTS if concept_split(c.id) == split)
