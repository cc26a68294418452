//! Start-up checks that stop the server before it listens.

use crate::helpers::*;

#[tokio::test]
async fn a_corrupt_cache_file_stops_the_start_and_is_left_unchanged() {
    let settings = TestSettings::new("http://127.0.0.1:9", "http://127.0.0.1:9");
    let path = settings.dir.path().join("cache.json");
    let corrupt = br#"[{"sub_id": "sub_1", "license_key": "K", "interval": "month", "license_id": "#;
    std::fs::write(&path, corrupt).expect("write");

    let error = stripe_licensespring::build_app(&settings.settings()).await.expect_err("refuses to start");
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "names the file: {message}");
    assert!(message.contains("not JSON"), "says what is wrong: {message}");
    assert_eq!(std::fs::read(&path).expect("still there"), corrupt, "left byte for byte");
}

#[tokio::test]
async fn a_missing_cache_file_is_created_empty_at_start() {
    let settings = TestSettings::new("http://127.0.0.1:9", "http://127.0.0.1:9");
    let path = settings.dir.path().join("cache.json");
    let _app = TestApp::spawn(settings).await;
    assert_eq!(std::fs::read_to_string(&path).expect("created"), "[]");
}
