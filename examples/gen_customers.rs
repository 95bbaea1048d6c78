//! Deterministic customer CSV generator for benchmarks and memory tests.
//!
//! Writes `--rows` customers in 44 canonical columns to stdout (or `--out`). The same arguments
//! always give the same bytes. `--version` > 0 makes "the next night's file": the rows that
//! `--change-rate` picks get new values in their mutable fields (the rest stay as in version 0).
//! `--dirty` makes that share of rows carry one error custload rejects. `--national-phones`
//! writes every phone in its national form (`030 1234567` for `+49301234567`), as legacy CRM
//! exports do: custload rewrites each to E.164 with a `NORMALIZED` warning, so every row warns.
//!
//! ```text
//! cargo run --release --example gen_customers -- --rows 1000000 > night1.csv
//! # half the rows of night1 changed, half new:
//! cargo run --release --example gen_customers -- --rows 1000000 --start 500000 --version 1 --change-rate 1 > night2.csv
//! ```

use clap::Parser;
use std::io::{BufWriter, Write};
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Command line of the generator.
#[derive(Parser)]
#[command(about = "Writes N deterministic customer rows as CSV")]
struct Args {
    /// Rows to write.
    #[arg(long, default_value_t = 1000)]
    rows: u64,
    /// Index of the first row (external_id `G-<index>`).
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Version of the mutable fields: 0 is the first file, 1 the next night's, ...
    #[arg(long, default_value_t = 0)]
    version: u64,
    /// Share of rows (0-1) whose mutable fields follow `--version` (the rest keep version 0).
    #[arg(long, default_value_t = 0.0)]
    change_rate: f64,
    /// Share of rows (0-1) with one error (a bad email, country, date or enum).
    #[arg(long, default_value_t = 0.0)]
    dirty: f64,
    /// Seed of every choice.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Write here instead of stdout.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Phones in national form (with the country's trunk prefix) instead of E.164.
    #[arg(long)]
    national_phones: bool,
}

const COLUMNS: &[&str] = &[
    "external_id",
    "type",
    "status",
    "enable",
    "enable_otp",
    "first_name",
    "last_name",
    "middle_name",
    "full_name",
    "company_name",
    "trading_name",
    "registration_number",
    "birth_date",
    "citizenship",
    "country_of_residence",
    "nationality_codes",
    "domicile_codes",
    "email",
    "phone",
    "preferred_language",
    "timezone",
    "brand",
    "manager_id",
    "assigned_manager_id",
    "lead_source",
    "campaign",
    "affiliate_id",
    "introducer_id",
    "crm_stage",
    "segment",
    "tags_json",
    "email_verified",
    "phone_verified",
    "marketing_allowed",
    "tax_id",
    "national_id",
    "pep_status",
    "sanctions_status",
    "risk_level",
    "aml_status",
    "kyc_level",
    "last_contact_time",
    "conversion_time",
    "comment",
];

const FIRST: &[&str] = &[
    "Anna", "Ben", "Chloé", "Dmitri", "Elif", "Farah", "Günter", "Hana", "Ivo", "Jana", "Kofi",
    "Lena", "Mateo", "Nora", "Olu", "Priya", "Quinn", "Rosa", "Sven", "Tariq",
];
const LAST: &[&str] = &[
    "Adeyemi", "Bauer", "Costa", "Dubois", "Eriksen", "Fischer", "García", "Huber", "Ivanova",
    "Jensen", "Kowalski", "Lopez", "Müller", "Novak", "O'Brien", "Petrov", "Rossi", "Schmidt",
];
/// (country, phone prefix with area code, the same in national form, language, time zone)
const PLACES: &[(&str, &str, &str, &str, &str)] = &[
    ("DE", "+4930", "030 ", "de", "Europe/Berlin"),
    ("FR", "+3314", "014 ", "fr", "Europe/Paris"),
    ("GB", "+44207", "0207 ", "en-GB", "Europe/London"),
    ("ES", "+3491", "91 ", "es", "Europe/Madrid"),
    ("IT", "+3906", "06 ", "it", "Europe/Rome"),
    ("NL", "+3120", "020 ", "nl", "Europe/Amsterdam"),
    ("PL", "+4822", "22 ", "pl", "Europe/Warsaw"),
    ("US", "+1212", "(212) ", "en-US", "America/New_York"),
];
const STAGES: &[&str] = &["lead", "prospect", "onboarding", "active", "dormant"];
const SOURCES: &[&str] = &["web", "affiliate", "referral", "event", "import"];

/// One deterministic choice per (row, field, version).
struct Dice {
    seed: u64,
    row: u64,
}

impl Dice {
    fn roll(&self, what: u64) -> u64 {
        xxh3_64_with_seed(
            &[self.row.to_le_bytes(), what.to_le_bytes()].concat(),
            self.seed,
        )
    }

    fn pick<'a>(&self, what: u64, from: &[&'a str]) -> &'a str {
        from[(self.roll(what) % from.len() as u64) as usize]
    }

    fn chance(&self, what: u64, rate: f64) -> bool {
        (self.roll(what) as f64 / u64::MAX as f64) < rate
    }
}

fn row(args: &Args, index: u64, out: &mut String) {
    let dice = Dice {
        seed: args.seed,
        row: index,
    };
    // Mutable fields take the row's version: the file's one for changed rows, 0 for the rest.
    let v = if args.version > 0 && dice.chance(1, args.change_rate) {
        args.version
    } else {
        0
    };
    let business = dice.roll(2).is_multiple_of(10);
    let first = dice.pick(3, FIRST);
    let last = dice.pick(4, LAST);
    let (country, prefix, national, language, tz) =
        PLACES[(dice.roll(5) % PLACES.len() as u64) as usize];
    let prefix = if args.national_phones {
        national
    } else {
        prefix
    };
    let birth_year = 1950 + dice.roll(6) % 55;
    let stage = dice.pick(100 + v, STAGES);
    let contact = 1_700_000_000 + (dice.roll(101 + v) % 30_000_000);
    let ascii = |s: &str| -> String {
        s.chars()
            .filter(char::is_ascii_alphabetic)
            .collect::<String>()
            .to_lowercase()
    };
    let mut email = format!("{}.{}.{index}@example.com", ascii(first), ascii(last));
    let mut citizenship = country.to_owned();
    let mut birth = format!(
        "{birth_year}-{:02}-{:02}",
        1 + dice.roll(7) % 12,
        1 + dice.roll(8) % 28
    );
    let mut status = (dice.roll(102 + v) % 4).to_string();
    if dice.chance(9, args.dirty) {
        match dice.roll(10) % 4 {
            0 => email = format!("{first}.at.example.com"),
            1 => citizenship = "Atlantis".into(),
            2 => birth = "2999-01-01".into(),
            _ => status = "9".into(),
        }
    }
    let cells: [String; 44] = [
        format!("G-{index:09}"),
        u8::from(business).to_string(),
        status,
        "1".into(),
        (dice.roll(11) % 2).to_string(),
        first.into(),
        last.into(),
        String::new(),
        format!("{first} {last}"),
        if business {
            format!("{last} Holding GmbH")
        } else {
            String::new()
        },
        String::new(),
        if business {
            format!("HRB {}", 10_000 + dice.roll(12) % 90_000)
        } else {
            String::new()
        },
        birth,
        citizenship,
        country.into(),
        country.into(),
        country.into(),
        email,
        format!("{prefix}{:07}", 1_000_000 + dice.roll(13) % 8_999_999),
        language.into(),
        tz.into(),
        "default".into(),
        (1 + dice.roll(14) % 50).to_string(),
        (1 + dice.roll(103 + v) % 50).to_string(),
        dice.pick(15, SOURCES).into(),
        format!("cmp-{}", dice.roll(16) % 40),
        format!("aff-{}", dice.roll(17) % 200),
        String::new(),
        stage.into(),
        format!("seg-{}", dice.roll(104 + v) % 6),
        format!("[\"{stage}\",\"v{v}\"]"),
        "1".into(),
        (dice.roll(18) % 2).to_string(),
        (dice.roll(105 + v) % 2).to_string(),
        format!("TX{:010}", dice.roll(19) % 10_000_000_000),
        format!("ID{:08}", dice.roll(20) % 100_000_000),
        "0".into(),
        "0".into(),
        (dice.roll(106 + v) % 3).to_string(),
        (dice.roll(21) % 4).to_string(),
        (dice.roll(22) % 4).to_string(),
        contact.to_string(),
        String::new(),
        format!("generated row {index}, version {v}"),
    ];
    for (n, cell) in cells.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        if cell.contains([',', '"', '\n']) {
            out.push('"');
            out.push_str(&cell.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(cell);
        }
    }
    out.push('\n');
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let sink: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(std::fs::File::create(path)?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut sink = BufWriter::with_capacity(1 << 20, sink);
    sink.write_all(COLUMNS.join(",").as_bytes())?;
    sink.write_all(b"\n")?;
    let mut line = String::with_capacity(1024);
    for index in args.start..args.start + args.rows {
        line.clear();
        row(&args, index, &mut line);
        match sink.write_all(line.as_bytes()) {
            // A reader that stops early (head, a failed run) is not an error of the generator.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            other => other?,
        }
    }
    sink.flush()
}
