"""Grouping: the same bug → one group, a different bug → another (enrich/sentry_grouping)."""

from __future__ import annotations

import copy

from weftline.enrich.sentry_grouping import group_event, parameterize


def py_error(
    typ="ZeroDivisionError", value="division by zero", funcs=("main", "divide"), lines=None
):
    frames = []
    for n, f in enumerate(funcs):
        frames.append(
            {
                "filename": "app.py",
                "abs_path": "/srv/app.py",
                "module": "app",
                "function": f,
                "lineno": (lines or [10 + n for n in range(len(funcs))])[n],
                "context_line": f"    return {f}()",
                "in_app": True,
            }
        )
    return {
        "platform": "python",
        "exception": {"values": [{"type": typ, "value": value, "stacktrace": {"frames": frames}}]},
    }


def gid(ev):
    return group_event(ev).group_id


def test_same_bug_on_other_lines_is_one_group():
    a = py_error(lines=[10, 20])
    b = py_error(lines=[55, 99], value="division by zero (again)")
    assert gid(a) == gid(b)
    assert group_event(a).variant == "app"


def test_other_function_or_type_is_another_group():
    assert gid(py_error()) != gid(py_error(funcs=("main", "ratio")))
    assert gid(py_error()) != gid(py_error(typ="ValueError"))


def test_library_frames_do_not_split_an_app_issue():
    a = py_error()
    b = copy.deepcopy(a)
    b["exception"]["values"][0]["stacktrace"]["frames"].insert(
        0, {"module": "uvicorn.main", "function": "run", "in_app": False, "context_line": "x"}
    )
    assert gid(a) == gid(b)


def test_recursion_frames_count_once():
    a = py_error(funcs=("main", "walk"), lines=[1, 2])
    b = py_error(funcs=("main", "walk", "walk", "walk"), lines=[1, 2, 2, 2])
    assert gid(a) == gid(b)


def test_value_counts_only_without_frames_and_is_parameterized():
    def bare(v):
        return {"platform": "python", "exception": [{"type": "NotFound", "value": v}]}

    assert gid(bare("user 123 not found at 10.0.0.1")) == gid(bare("user 98 not found at 1.2.3.4"))
    assert gid(bare("user 1 not found")) != gid(bare("order 1 not found"))
    # with frames the value is not used at all
    assert gid(py_error(value="id 1")) == gid(py_error(value="something else"))


def test_chained_exceptions_all_count():
    a = py_error()
    b = copy.deepcopy(a)
    b["exception"]["values"].insert(0, {"type": "KeyError", "value": "'x'"})
    assert gid(a) != gid(b)


def test_message_templates_group_across_arguments():
    def log(msg, formatted):
        return {"logentry": {"message": msg, "formatted": formatted}, "platform": "python"}

    a = log("order %s failed", "order 1 failed")
    b = log("order %s failed", "order 2 failed")
    assert gid(a) == gid(b) and group_event(a).variant == "message"
    assert group_event(a).title == "order 1 failed"
    # plain messages are parameterized
    m1 = {"message": "timeout after 3000ms talking to 10.1.2.3 for job 42"}
    m2 = {"message": "timeout after 15ms talking to 10.9.9.9 for job 77"}
    assert gid(m1) == gid(m2)
    assert gid(m1) != gid({"message": "something else entirely"})


def test_js_synthetic_exception_groups_and_titles_by_message():
    def capture_message(text, fn):
        return {
            "platform": "javascript",
            "message": text,
            "exception": {
                "values": [
                    {
                        "value": text,
                        "mechanism": {"type": "generic", "synthetic": True},
                        "stacktrace": {
                            "frames": [
                                {"filename": "http://h/app.js", "function": fn, "in_app": True}
                            ]
                        },
                    }
                ]
            },
        }

    a = capture_message("hello from browser", "onClick")
    assert group_event(a).title == "hello from browser"
    assert gid(a) == gid(capture_message("hello again", "onClick"))  # same call site
    assert gid(a) != gid(capture_message("hello from browser", "onSubmit"))


def test_js_frames_anonymous_and_url_files():
    def js(fn, url):
        return {
            "platform": "javascript",
            "exception": [
                {
                    "type": "TypeError",
                    "value": "x is undefined",
                    "stacktrace": {"frames": [{"filename": url, "function": fn, "in_app": True}]},
                }
            ],
        }

    # the URL (which carries deploy hashes) never counts; the function does
    assert gid(js("Foo.inner", "http://a/main.1a2b3c4d.js")) == gid(
        js("inner", "https://b/main.9f9f9f9f.js")
    )
    assert gid(js("inner", "http://a/x.js")) != gid(js("outer", "http://a/x.js"))
    # an anonymous frame contributes nothing: the type and value decide
    assert group_event(js("?", "http://a/x.js")).variant == "system"


def test_file_names_lose_bundler_hashes():
    def f(name):
        return {
            "platform": "javascript",
            "exception": [
                {
                    "type": "E",
                    "stacktrace": {"frames": [{"filename": name, "function": "go"}]},
                }
            ],
        }

    assert gid(f("static/main.8f3a2c1d.js")) == gid(f("static/main.0123abcd.js"))


def test_fingerprints():
    a, b = py_error(), py_error(typ="ValueError", funcs=("x",))
    for ev in (a, b):
        ev["fingerprint"] = ["database-unavailable"]
    assert gid(a) == gid(b) and group_event(a).variant == "custom"
    c, d = py_error(), py_error()
    c["fingerprint"] = ["{{ default }}", "{{ tags.tenant }}"]
    d["fingerprint"] = ["{{default}}", "{{ tags.tenant }}"]
    c["tags"] = {"tenant": "acme"}
    d["tags"] = [["tenant", "globex"]]
    assert gid(c) != gid(d)
    d["tags"] = {"tenant": "acme"}
    assert gid(c) == gid(d) and group_event(c).variant == "app+fingerprint"
    e = py_error()
    e["fingerprint"] = ["{{ type }}"]
    assert group_event(e).values == ("fp:ZeroDivisionError",)


def test_checksum_wins():
    ev = py_error()
    ev["checksum"] = "A" * 32
    assert gid(ev) == "a" * 32


def test_title_and_culprit():
    g = group_event(py_error())
    assert g.title == "ZeroDivisionError: division by zero"
    assert g.culprit == "app in divide"
    assert group_event({}).title == "<untitled>"


def test_parameterize():
    text = (
        "User 12345 failed at 2024-01-01T10:00:00Z from 10.0.0.1 id=550e8400-e29b-41d4-a716-"
        "446655440000 mail bob@example.com url https://x.io/a?b=1 took 1.5s hash "
        "da39a3ee5e6b4b0d3255bfef95601890afd80709 flag=true name='bob' ratio 0.25"
    )
    assert parameterize(text) == (
        "User <int> failed at <date> from <ip> id=<uuid> mail <email> url <url> took "
        "<duration> hash <sha1> flag=<bool> name=<quoted_str> ratio <float>"
    )
    assert parameterize("a\nb\nc\nd") == "a\nb..."
