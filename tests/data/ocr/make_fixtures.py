"""Make the OCR and PDF-table fixtures: run from the repository root to remake them.

    .venv/bin/python tests/data/ocr/make_fixtures.py

- court-order-scan.pdf: two pages of an invented court order, typeset with fpdf2, rendered with
  pypdfium2 to gray pixels at 150 DPI, turned by a fraction of a degree, speckled and saved as
  JPEG, then placed as full-page images in a new PDF whose only text layer is the docket line
  at the top of each page: a scan as a court clerk's system files it.
- court-order.txt: the order's text, for the character error rate of the OCR.
- notice.png: the first paragraphs of the order, typeset and rendered to a PNG.
- ledger.tiff: two pages (frames) of typeset text, bilevel, as a fax or a document scanner writes.
- meadow.jpg: a picture without text (sky, hills, a sun and noise): OCR must find nothing.
- harbour-fees.pdf: a born-digital table drawn with fpdf2 (header row, row labels, numbers),
  longer than one chunk, with a paragraph before and after it.
- harbour-fees-scan.pdf: the same page rendered at 150 DPI, turned by 0.4 degrees, speckled and
  saved as a JPEG page image with no text layer: a table that exists only as a picture.

Everything is invented for this project and released under CC0 (see tests/data/README.md).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pypdfium2 as pdfium
from fpdf import FPDF
from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent
SEED = 20240302

ORDER_PAGES = [
    [
        "UNITED STATES DISTRICT COURT",
        "DISTRICT OF NORTHERN MARSHLAND",
        "",
        "HARBOUR MASTERS GUILD, Plaintiff,",
        "v. Civil Action No. 24-cv-01734",
        "QUAYSIDE FREIGHT LIMITED, Defendant.",
        "",
        "ORDER ON MOTION FOR PRELIMINARY INJUNCTION",
        "",
        "The plaintiff asks the court to stop the defendant from mooring cargo barges",
        "along the northern breakwater of Saltmere harbour during the spring tides.",
        "The plaintiff says that the barges block the channel used by the lifeboat",
        "and that two launches were delayed by more than forty minutes in March.",
        "The defendant answers that its permits allow mooring at berths nine to",
        "fourteen and that the lifeboat can use the southern channel instead.",
        "",
        "Having read the papers and heard counsel on the second of April, the court",
        "finds that the plaintiff is likely to succeed on its claim that the permits",
        "do not cover mooring within sixty metres of the lifeboat slipway.",
    ],
    [
        "IT IS THEREFORE ORDERED that the motion is GRANTED in part.",
        "",
        "1. The defendant shall not moor any barge within sixty metres of the",
        "lifeboat slipway between the first of March and the thirtieth of June.",
        "2. The defendant shall post a bond of twelve thousand five hundred dollars",
        "with the clerk of the court within fourteen days of this order.",
        "3. The harbour master shall inspect the northern breakwater every Friday",
        "and report any barge found inside the exclusion zone to the court.",
        "4. The remainder of the motion, which asked the court to close berths nine",
        "to fourteen altogether, is DENIED.",
        "",
        "A hearing on the merits is set for the ninth of September at ten o'clock",
        "in courtroom three of the Saltmere courthouse.",
        "",
        "SO ORDERED.",
        "Judge Amelia Thornbury",
    ],
]
DOCKET = "Case 1:24-cv-01734-AT Document 42 Filed 04/05/24 Page {page} of {pages}"

LEDGER_PAGES = [
    [
        "Lighthouse keepers ledger, spring quarter.",
        "Paraffin delivered to Skerry Point: forty gallons.",
        "The foghorn compressor was serviced on the eleventh.",
    ],
    [
        "Visitors to the lantern room: one hundred and six.",
        "The relief boat was late twice because of gales.",
        "Next delivery of paraffin is due in July.",
    ],
]

FEE_HEADER = ["Vessel class", "Berth fee per day", "Pilotage fee", "Waste levy", "Winter rate"]
FEE_ROWS = [
    ["Rowing boat", "4.50", "none", "0.80", "3.00"],
    ["Sailing dinghy", "7.20", "none", "1.10", "5.40"],
    ["Fishing smack", "18.00", "35.00", "2.60", "12.50"],
    ["Motor launch", "22.40", "35.00", "3.10", "16.80"],
    ["Pilot cutter", "26.00", "exempt", "3.40", "19.00"],
    ["Coastal trawler", "48.75", "62.00", "6.20", "36.00"],
    ["Cargo barge", "95.00", "120.00", "14.50", "71.25"],
    ["Passenger ferry", "130.00", "145.00", "21.00", "98.00"],
    ["Bulk carrier", "410.00", "380.00", "66.00", "305.00"],
    ["Cruise ship", "875.00", "520.00", "140.00", "655.00"],
    ["Research vessel", "58.30", "62.00", "5.90", "41.10"],
    ["Tall ship", "64.00", "80.00", "7.70", "44.80"],
]


def order_text() -> str:
    """The order as typeset, without the docket lines (those stay a text layer)."""
    return "\n\n".join("\n".join(line for line in page if line) for page in ORDER_PAGES) + "\n"


def typeset(pages: list[list[str]], *, size: int = 12) -> bytes:
    """A born-digital PDF of the lines, one list per page, in Times."""
    pdf = FPDF(format="letter")
    pdf.set_auto_page_break(False)
    for lines in pages:
        pdf.add_page()
        pdf.set_font("Times", size=size)
        pdf.set_xy(25, 35)
        for line in lines:
            pdf.cell(0, size * 0.55, line, new_x="LMARGIN", new_y="NEXT")
            pdf.set_x(25)
    return bytes(pdf.output())


def render(pdf_bytes: bytes, dpi: int) -> list[Image.Image]:
    document = pdfium.PdfDocument(pdf_bytes)
    return [page.render(scale=dpi / 72, grayscale=True).to_pil() for page in document]


def scanned(image: Image.Image, rng: np.random.Generator, angle: float) -> Image.Image:
    """A page as a scanner gives it: slightly turned, a gray paper tone, speckles, a soft edge."""
    turned = image.convert("L").rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=255)
    pixels = np.asarray(turned, dtype=np.float32) * 0.92 + 8  # paper is not white, ink not black
    pixels += rng.normal(0, 9, pixels.shape)
    specks = rng.random(pixels.shape) < 0.0015
    pixels[specks] = rng.uniform(40, 140, specks.sum())
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.5))


def make_scan(rng: np.random.Generator) -> None:
    images = render(typeset(ORDER_PAGES), 150)
    pdf = FPDF(format="letter", unit="pt")
    pdf.set_auto_page_break(False)
    for number, image in enumerate(images, start=1):
        page = scanned(image, rng, angle=(0.6, -0.8)[number - 1])
        buffer = io.BytesIO()
        page.save(buffer, format="JPEG", quality=55, optimize=True)
        pdf.add_page()
        pdf.image(buffer, x=0, y=0, w=612, h=792)
        pdf.set_font("Helvetica", size=8)
        pdf.set_xy(36, 14)
        pdf.cell(0, 10, DOCKET.format(page=number, pages=len(images)))
    pdf.output(str(HERE / "court-order-scan.pdf"))
    (HERE / "court-order.txt").write_text(order_text(), encoding="utf-8")


def make_images(rng: np.random.Generator) -> None:
    first = render(typeset([ORDER_PAGES[0][9:15]]), 110)[0]
    crop = first.crop((0, 0, first.width, int(first.height * 0.32)))
    crop.convert("L").save(HERE / "notice.png", optimize=True)

    frames = [
        render(typeset([lines], size=14), 120)[0].crop((0, 0, 1020, 380)).point(lambda v: 255 if v > 150 else 0)
        for lines in LEDGER_PAGES
    ]
    bilevel = [frame.convert("1") for frame in frames]
    bilevel[0].save(HERE / "ledger.tiff", save_all=True, append_images=bilevel[1:], compression="group4")

    width, height = 640, 420
    y = np.linspace(0, 1, height)[:, None]
    sky = np.stack([120 + 80 * y, 170 + 50 * y, 235 - 20 * y], axis=-1) * np.ones((1, width, 1))
    picture = Image.fromarray(np.clip(sky + rng.normal(0, 6, sky.shape), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    draw.ellipse((470, 50, 560, 140), fill=(250, 220, 90))
    draw.polygon([(0, 300), (180, 200), (360, 290), (520, 230), (640, 280), (640, 420), (0, 420)], fill=(70, 130, 60))
    draw.polygon([(0, 360), (260, 310), (640, 370), (640, 420), (0, 420)], fill=(50, 100, 45))
    picture.filter(ImageFilter.GaussianBlur(1.2)).save(HERE / "meadow.jpg", quality=80)


def make_table_pdf() -> None:
    pdf = FPDF(format="A4")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 14)
    pdf.cell(0, 10, "Saltmere Harbour: schedule of fees", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=10)
    pdf.multi_cell(
        0,
        5,
        "The harbour board sets these fees each January. Fees are in pounds and are charged per "
        "vessel; the winter rate applies from November to February. Vessels on charity service "
        "may ask the harbour master for a reduction.",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.ln(4)
    with pdf.table(col_widths=(34, 26, 22, 20, 22), text_align=("LEFT", "RIGHT", "RIGHT", "RIGHT", "RIGHT")) as table:
        for row in [FEE_HEADER, *FEE_ROWS]:
            cells = table.row()
            for value in row:
                cells.cell(value)
    pdf.ln(4)
    pdf.multi_cell(
        0,
        5,
        "Pilotage is compulsory for vessels over twenty metres. The waste levy funds the reception "
        "barge at berth two, which takes oily water, sewage and garbage at no further charge.",
    )
    pdf.output(str(HERE / "harbour-fees.pdf"))


def make_table_scan() -> None:
    """harbour-fees.pdf as a scanned page (its own random numbers: the other fixtures stay as they are)."""
    [image] = render((HERE / "harbour-fees.pdf").read_bytes(), 150)
    page = scanned(image, np.random.default_rng(SEED + 1), angle=0.4)
    buffer = io.BytesIO()
    page.save(buffer, format="JPEG", quality=60, optimize=True)
    pdf = FPDF(format="A4", unit="pt")
    pdf.add_page()
    pdf.image(buffer, x=0, y=0, w=pdf.w, h=pdf.h)
    pdf.output(str(HERE / "harbour-fees-scan.pdf"))


def main() -> None:
    rng = np.random.default_rng(SEED)
    make_scan(rng)
    make_images(rng)
    make_table_pdf()
    make_table_scan()
    for path in sorted(HERE.iterdir()):
        print(f"{path.name:24} {path.stat().st_size / 1024:7.1f} kB")


if __name__ == "__main__":
    main()
