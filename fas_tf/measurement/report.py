"""What ``python -m fas_tf.measure`` writes: the annotated picture of an image's faces, the CSV
of every face and the HTML report (summary, filter and sort by verdict).

MEASUREMENT AID, NOT A DIAGNOSIS.
"""

from __future__ import annotations

import csv
import html
import io
import os
import urllib.parse
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from fas_tf import cli
from fas_tf import measurements as M

SHORT = {
    "pfl_right": "PFL-R", "pfl_left": "PFL-L", "pfl_mean": "PFL-mean", "icd": "ICD",
    "ocd": "OCD", "philtrum": "PHIL", "upper_lip": "UL", "mouth_width": "MW",
    "face_height": "FH",
}  # fmt: skip
# where a segment's label goes: (fraction along a->b, offset along the normal in px)
LABEL_AT = {"icd": (0.5, 14.0), "ocd": (0.5, -16.0), "face_height": (0.85, 14.0),
            "philtrum": (0.5, -14.0), "mouth_width": (0.8, 14.0), "upper_lip": (0.5, 14.0)}
OK_COLOR = (40, 200, 40)
BAD_COLOR = (60, 60, 230)
IMPRECISE_COLOR = (0, 170, 255)  # amber (BGR): measured, but too imprecise to compare infants
VERDICT_COLOR = {"ok": OK_COLOR, "imprecise": IMPRECISE_COLOR}


def printable(name: str) -> str:
    """``name`` as valid UTF-8 text: bytes of a non-UTF-8 file name as backslash escapes."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def href(name: str) -> str:
    """A relative URL of a file name (``#``, ``?``, ``%``, spaces and raw bytes escaped)."""
    return urllib.parse.quote(os.fsencode(name))


def _text(img: np.ndarray, s: str, org: tuple[int, int], scale: float, color, thick: int = 1,
          outline: bool = True):
    if outline:
        cv2.putText(img, s, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick + 2,
                    cv2.LINE_AA)
    cv2.putText(img, s, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, thick, cv2.LINE_AA)


def _value_line(name: str, entry: dict, ratio: bool, face_reasons: list[str]) -> str:
    if entry["verdict"] == "imprecise":
        return f"{name}: {entry['value']:.3f} +- {entry['sigma']:.3f} IMPRECISE vs other infants"
    if entry["verdict"] != "ok":
        own = [r for r in entry["reasons"] if r not in face_reasons]
        return f"{name}: not measurable" + (f" ({own[0].split(':')[0][:34]})" if own else "")
    if ratio:
        return f"{name}: {entry['value']:.3f} +- {entry['sigma']:.3f}"
    s = f"{name}: {entry['value_px']:.1f} +- {entry['sigma_px']:.1f} px"
    if entry.get("value_mm") is not None:
        s += f" ({entry['value_mm']:.1f} +- {entry['sigma_mm']:.1f} mm)"
    return s


def draw_report(image: np.ndarray, faces: list[dict]) -> np.ndarray:
    """Image with landmarks and labelled segments (green ok, red not measurable) + text panel."""
    h, w = image.shape[:2]
    f = 800.0 / max(h, w) if max(h, w) < 800 else 1.0
    img = cv2.resize(image, (round(w * f), round(h * f))) if f != 1.0 else image.copy()
    lines: list[tuple[str, tuple[int, int, int]]] = [
        ("MEASUREMENT AID - NOT A DIAGNOSIS", (0, 200, 255))]
    for k, face in enumerate(faces, 1):
        pts = np.asarray(face["landmarks"], float) * f
        res = face["result"]
        for p in pts:
            cv2.circle(img, (round(p[0]), round(p[1])), 2, (255, 220, 0), -1, cv2.LINE_AA)
        for name, (a, b, _) in M.SEGMENTS.items():
            pa = M.point(pts, a)
            pb = M.point(pts, b)
            ok = res["distances"][name]["verdict"] == "ok"
            color = OK_COLOR if ok else BAD_COLOR
            cv2.line(img, tuple(np.round(pa).astype(int)), tuple(np.round(pb).astype(int)),
                     color, 2 if ok else 1, cv2.LINE_AA)  # fmt: skip
            t, off = LABEL_AT.get(name, (0.5, 12.0))
            d = pb - pa
            n = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-9)
            at = pa + t * d + off * n
            _text(img, SHORT[name], (round(at[0]) - 12, round(at[1]) + 4), 0.45, color)
        fr = res["face"]
        tag = f"face {k}" + (f" box {face['box']}" if face.get("box") else "")
        lines.append((f"{tag}: {fr['verdict'].upper()}",
                      OK_COLOR if fr["verdict"] == "ok" else BAD_COLOR))  # fmt: skip
        for r in fr["reasons"]:
            lines.append(("  " + r[:60], BAD_COLOR))
        pose = [f"{n} {fr[n + '_deg']:.0f}" for n in ("yaw", "pitch", "roll")
                if fr.get(n + "_deg") is not None]  # fmt: skip
        lines.append((f"IOD {fr['interocular_px']:.0f}px  " + "  ".join(pose) + " (deg)",
                       (230, 230, 230)))  # fmt: skip
        for name, e in res["distances"].items():
            lines.append((_value_line(SHORT[name], e, False, fr["reasons"]),
                          OK_COLOR if e["verdict"] == "ok" else BAD_COLOR))  # fmt: skip
        for name, e in res["ratios"].items():
            lines.append((_value_line(name, e, True, fr["reasons"]),
                          VERDICT_COLOR.get(e["verdict"], BAD_COLOR)))  # fmt: skip
    panel_w, step = 470, 18
    hh = max(img.shape[0], step * (len(lines) + 2))
    canvas = np.full((hh, img.shape[1] + panel_w, 3), 30, np.uint8)
    canvas[: img.shape[0], : img.shape[1]] = img
    for i, (s, c) in enumerate(lines):
        _text(canvas, s, (img.shape[1] + 8, step * (i + 1) + 4), 0.45, c, outline=False)
    return canvas


def _csv_columns(mm: bool) -> list[str]:
    cols = ["image", "face", "face_verdict", "face_reasons", "interocular_px", "yaw_deg",
            "yaw_sigma_deg", "pitch_deg", "pitch_sigma_deg", "roll_deg", "eye_opening_right",
            "eye_opening_left", "mouth_open", "brow_raise"]  # fmt: skip
    for name in M.DISTANCES:
        cols += [f"{name}_px", f"{name}_sigma_px"]
        cols += [f"{name}_mm", f"{name}_sigma_mm"] if mm else []
        cols += [f"{name}_verdict", f"{name}_reasons"]
    for name in M.RATIOS:
        cols += [name, f"{name}_sigma", f"{name}_verdict", f"{name}_reasons", f"{name}_why"]
    return cols


def csv_row(image: str, k: int, res: dict) -> dict:
    fr = res["face"]
    row = {"image": image, "face": k, "face_verdict": fr["verdict"],
           "face_reasons": "; ".join(fr["reasons"])}  # fmt: skip
    row.update({c: fr.get(c) for c in _csv_columns(False)[4:14]})
    for name, e in res["distances"].items():
        row.update({f"{name}_px": e["value_px"], f"{name}_sigma_px": e["sigma_px"],
                    f"{name}_mm": e.get("value_mm"), f"{name}_sigma_mm": e.get("sigma_mm"),
                    f"{name}_verdict": e["verdict"],
                    f"{name}_reasons": " ".join(e["reason_codes"])})  # fmt: skip
    for name, e in res["ratios"].items():
        row.update({name: e["value"], f"{name}_sigma": e["sigma"], f"{name}_verdict": e["verdict"],
                    f"{name}_reasons": " ".join(e["reason_codes"]),
                    f"{name}_why": "; ".join(e["reasons"])})  # fmt: skip
    return row


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with cli.atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def write_csv(path: Path, rows: list[dict], mm: bool) -> None:
    """All faces, one row each; values empty when not measurable, reasons as codes."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_csv_columns(mm), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else (f"{v:.6g}" if isinstance(v, float) else v))
                         for k, v in row.items()})  # fmt: skip
    write_bytes(path, buf.getvalue().encode("utf-8"))


# the values of the report, with a short label each
HTML_VALUES = {"pfl_mean": "PFL mean", "pfl_mean_to_icd": "PFL / ICD",
               "pfl_mean_to_ocd": "PFL / OCD", "icd_to_ocd": "ICD / OCD",
               "philtrum_to_face_height": "philtrum / face h.",
               "upper_lip_to_mouth_width": "upper lip / mouth w."}  # fmt: skip


_CSS = """
*{box-sizing:border-box} body{font:14px/1.35 system-ui,sans-serif;margin:0 auto;padding:12px;
max-width:1400px;color:#222} h1{font-size:20px;margin:4px 0 8px}
.disc{background:#fff3cd;border:1px solid #e0c060;padding:6px 10px;margin:0 0 10px}
.summary{display:flex;flex-wrap:wrap;gap:10px;margin-bottom:10px}
.summary table{border-collapse:collapse;font-size:13px}
.summary td,.summary th{border:1px solid #ddd;padding:2px 6px;text-align:left}
.bar{position:sticky;top:0;background:#fff;padding:6px 0;border-bottom:1px solid #ddd;
display:flex;flex-wrap:wrap;gap:6px;align-items:center;z-index:1}
.bar button{padding:3px 10px;border:1px solid #999;background:#f4f4f4;border-radius:4px;
cursor:pointer} .bar button.on{background:#335;color:#fff}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,430px),1fr));
gap:10px;margin-top:10px}
.card{border:1px solid #ccc;border-radius:6px;padding:8px;display:flex;gap:8px;min-width:0}
.card img{width:150px;height:auto;cursor:zoom-in;flex:none;align-self:flex-start}
.card .info{min-width:0;overflow-wrap:anywhere} .name{font-weight:600}
.ok{color:#070} .bad{color:#b00} .warn{color:#a55a00} .err{color:#b00;font-weight:600}
.vals{border-collapse:collapse;font-size:12.5px;margin-top:4px}
.vals td{padding:1px 6px 1px 0;vertical-align:top} .vals td:first-child{white-space:nowrap}
.reasons{font-size:12.5px;color:#833}
#big{display:none;position:fixed;inset:0;background:rgba(0,0,0,.85);z-index:9;cursor:zoom-out;
overflow:auto;text-align:center} #big img{max-width:none;margin:10px auto}
"""


_JS = """
const cards=[...document.querySelectorAll('.card')],grid=document.querySelector('.grid');
function show(f,b){document.querySelectorAll('.bar button[data-f]').forEach(x=>
x.classList.toggle('on',x===b));let n=0;for(const c of cards){const v=f==='all'||
c.dataset.verdict===f||(f==='refused'&&['partial','refused'].includes(c.dataset.verdict));
c.style.display=v?'':'none';n+=v}document.getElementById('shown').textContent=n+' shown'}
function sortBy(k){const r={ok:0,imprecise:1,partial:2,refused:3,error:4};
const s=[...cards].sort((a,b)=>k==='name'?a.dataset.name.localeCompare(b.dataset.name):
(r[a.dataset.verdict]-r[b.dataset.verdict])||a.dataset.name.localeCompare(b.dataset.name));
s.forEach(c=>grid.appendChild(c))}
document.querySelectorAll('.bar button[data-f]').forEach(b=>b.onclick=()=>show(b.dataset.f,b));
document.getElementById('sort').onchange=e=>sortBy(e.target.value);
const big=document.getElementById('big');document.querySelectorAll('.card a.pic').forEach(a=>
a.onclick=e=>{e.preventDefault();big.innerHTML='<img src="'+a.getAttribute('href')+'">';
big.style.display='block'});big.onclick=()=>{big.style.display='none'};
document.onkeydown=e=>{if(e.key==='Escape')big.style.display='none'};
const h=location.hash.slice(1)||'all';show(h,document.querySelector('.bar button[data-f='+h+']'));
"""


def _card_verdict(res: dict) -> str:
    """ok: every report value ok; imprecise: every one measured, some imprecise; partial: some
    measured; refused: none."""
    verdicts = [_entry(res, n)["verdict"] for n in HTML_VALUES]
    measured = [v != "not measurable" for v in verdicts]
    if all(v == "ok" for v in verdicts):
        return "ok"
    return "imprecise" if all(measured) else "partial" if any(measured) else "refused"


def _entry(res: dict, name: str) -> dict:
    return res["ratios"][name] if name in res["ratios"] else res["distances"][name]


def write_html(path: Path, items: list[dict]) -> None:
    """One page: disclaimer, summary, filter/sort bar, then a card per face (or failed image)."""
    esc = html.escape
    faces = [(it, k, res) for it in items if not it.get("error")
             for k, res in enumerate(it["results"], 1)]  # fmt: skip
    errors = [it for it in items if it.get("error")]
    measurable = {n: Counter(_entry(r, n)["verdict"] for _, _, r in faces) for n in HTML_VALUES}
    reasons: Counter = Counter()
    for _, _, res in faces:
        codes = set(res["face"]["reason_codes"])
        for n in HTML_VALUES:
            codes.update(_entry(res, n)["reason_codes"])
        reasons.update(codes)
    verdicts = Counter(_card_verdict(r) for _, _, r in faces)
    nf = len(faces)
    rows_m = "".join(f"<tr><td>{esc(label)}</td><td>{nf - measurable[n]['not measurable']} / "
                     f"{nf}</td><td>{measurable[n]['imprecise']}</td></tr>"
                     for n, label in HTML_VALUES.items())  # fmt: skip
    rows_r = "".join(f"<tr><td>{esc(M.REASON_CODES.get(c, c))}</td><td>{k}</td></tr>"
                     for c, k in reasons.most_common())  # fmt: skip
    rows_r = rows_r or "<tr><td>none</td><td></td></tr>"
    cards = []
    for it, k, res in faces:
        fr = res["face"]
        verdict = _card_verdict(res)
        name = it["name"] + (f" (face {k})" if len(it["results"]) > 1 else "")
        vals = []
        for n, label in HTML_VALUES.items():
            e = _entry(res, n)
            if e["verdict"] in ("ok", "imprecise"):
                v, sg = (e["value"], e["sigma"]) if "value" in e else (e["value_px"], e["sigma_px"])
                unit = "" if "value" in e else " px"
                note = (f"<br><span class=reasons title='{esc(e['reasons'][0], quote=True)}'>"
                        f"cannot tell this infant from a typical one: &plusmn; {sg:.3f} vs a "
                        f"usual difference between infants of {e['spread_between_infants']:.3f}"
                        "</span>" if e["verdict"] == "imprecise" else "")  # fmt: skip
                cls = "ok" if e["verdict"] == "ok" else "warn"
                vals.append(f"<tr><td>{esc(label)}</td><td class={cls}>{v:.3f} &plusmn; {sg:.3f}"
                            f"{unit}{' <b>imprecise</b>' if note else ''}{note}</td></tr>")
            else:  # the face-level reasons are shown once, above
                own = [c for c in e["reason_codes"] if c not in fr["reason_codes"]]
                why = ": " + ", ".join(M.REASON_CODES.get(c, c) for c in own) if own else ""
                vals.append(f"<tr><td>{esc(label)}</td><td class=bad>not measurable"
                            f"{esc(why)}</td></tr>")  # fmt: skip
        pose = ", ".join(f"{a} {round(fr[a + '_deg'])}&plusmn;{round(fr[a + '_sigma_deg'])}&deg;"
                         for a in ("yaw", "pitch") if fr.get(a + "_deg") is not None)  # fmt: skip
        face_line = (f"<div class=reasons>{esc('; '.join(fr['reasons']))}</div>"
                     if fr["reasons"] else "")  # fmt: skip
        png = esc(it["png"], quote=True)
        cls = {"ok": "ok", "imprecise": "warn", "partial": "bad", "refused": "bad"}[verdict]
        cards.append(
            f"<div class=card data-verdict={verdict} data-name='{esc(name, quote=True)}'>"
            f"<a class=pic href='{png}' title='full size'><img src='{png}' alt='' "
            f"loading=lazy></a><div class=info><div class=name>{esc(name)}</div>"
            f"<div class={cls}>{verdict}</div><div>{pose}</div>{face_line}"
            f"<table class=vals>{''.join(vals)}</table></div></div>"
        )
    for it in errors:
        name = esc(it["name"], quote=True)
        cards.append(f"<div class=card data-verdict=error data-name='{name}'><div class=info>"
                     f"<div class=name>{name}</div><div class=err>error</div>"
                     f"<div>{esc(it['error'])}</div></div></div>")  # fmt: skip
    buttons = "".join(f"<button data-f={f}>{label} ({n})</button>" for f, label, n in (
        ("all", "all", nf + len(errors)), ("ok", "all ok", verdicts["ok"]),
        ("imprecise", "measured, some imprecise", verdicts["imprecise"]),
        ("partial", "partly measurable", verdicts["partial"]),
        ("refused", "not fully measurable", verdicts["partial"] + verdicts["refused"]),
        ("error", "errors", len(errors))))  # fmt: skip
    counts = f"{len(items)} image(s), {nf} face(s), {len(errors)} error(s)"
    page = f"""<!DOCTYPE html>
<html lang=en><head><meta charset="utf-8"><meta name=viewport content="width=device-width">
<title>FAS measurement report</title><style>{_CSS}</style></head><body>
<h1>FAS measurement report</h1>
<p class=disc><b>{esc(M.DISCLAIMER)}</b> {esc(M.SIDE_CONVENTION)}. Values &plusmn; one propagated
standard deviation. <b>Green</b> <i>ok</i>: the &plusmn; is small enough to compare this infant
with others. <b class=warn>Amber</b> <i>imprecise</i>: measured, but the &plusmn; is at least
half the usual difference between infants, so the value cannot tell this infant from a typical
one. <b class=bad>Red</b> <i>not measurable</i>: the tool refused to give a number, with the
reason.
Full values: measurements.csv and the per-image JSON files. Click a picture for full size.</p>
<div class=summary><table><tr><th colspan=3>{counts}</th></tr>
<tr><th>measured</th><th>faces</th><th>of them imprecise</th></tr>{rows_m}</table>
<table><tr><th>reason (faces with it on a value above)</th><th>faces</th></tr>{rows_r}</table>
</div>
<div class=bar>show: {buttons} <span id=shown></span> &nbsp; sort: <select id=sort>
<option value=name>by file name</option><option value=verdict>by verdict</option></select></div>
<div class=grid>
{chr(10).join(cards)}
</div><div id=big></div><script>{_JS}</script></body></html>
"""
    write_bytes(path, page.encode("utf-8"))
