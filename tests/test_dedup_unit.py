from conftest import SEED

from index.dedup import MinHasher


def test_syndicated_copy_is_similar_and_other_story_is_not():
    hasher = MinHasher()
    text = SEED.read_text(encoding="utf-8")
    copy = "By Staff Reporter. " + text.replace("Saturday", "Sunday") + " Reporting by the newsroom."
    original, syndicated = hasher.run(text), hasher.run(copy)
    other = hasher.run("The local football club won the cup final on penalties after a goalless draw in the rain.")
    assert original.similarity(syndicated.signature) > 0.8
    assert set(original.bands) & set(syndicated.bands)
    assert original.similarity(other.signature) < 0.1


def test_fingerprints_are_stable_across_instances():
    text = SEED.read_text(encoding="utf-8")
    assert MinHasher().run(text).bands == MinHasher().run(text).bands
