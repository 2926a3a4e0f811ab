"""Erasure requests (``[[requests]]``): queues, what erasing a subject means, fulfilling them.

- :mod:`.queue`: the application's queue table or the state store's, deadlines;
- :mod:`.erase`: the operations that erase one subject, run by the executor;
- :mod:`.fulfil`: what each run does with the open requests;
- :mod:`.commands`: ``retention request erase`` and ``retention requests``.
"""
