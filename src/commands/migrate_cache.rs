//! `migrate-cache`: imports a cache file into the database once. An entry the database holds
//! already is left as it is (the database may know newer), so running it again changes nothing.

use std::path::Path;

use super::exit;
use crate::cache;
use crate::settings::Settings;
use crate::store::postgres::PgStore;

/// Imports `from` (default `CACHE_PATH`) into `DATABASE_URL`; prints what it did.
pub async fn run(settings: &Settings, from: Option<&Path>) -> u8 {
    let Some(url) = &settings.database_url else {
        eprintln!(
            "error: DATABASE_URL is not set: migrate-cache imports the cache file into the database it names"
        );
        return exit::STOPPED;
    };
    let path = from.unwrap_or(&settings.cache_path);
    let entries = match cache::read_entries(path) {
        Ok(entries) => entries,
        Err(error) => {
            eprintln!("error: {error}");
            return exit::STOPPED;
        }
    };
    let database = match PgStore::connect(url).await {
        Ok(database) => database,
        Err(error) => {
            eprintln!("error: {error}");
            return exit::STOPPED;
        }
    };
    match database.import(&entries).await {
        Ok(added) => {
            let already = entries.len() as u64 - added;
            println!(
                "{}: {added} subscription(s) imported into PostgreSQL at {}, {already} already there",
                path.display(),
                database.target()
            );
            exit::OK
        }
        Err(error) => {
            eprintln!("error: nothing was imported: {error}");
            exit::STOPPED
        }
    }
}
