"""Written solutions of the exercises, one module per stage lesson: plain numpy, as a learner
would write them after the lesson. `hint(name)` shows one at its third tier, `solution(name)` at
once; the lesson pages never print them."""
