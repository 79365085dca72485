fn main() {
    // refinery embeds migrations at compile time; without this a new migration file is missed.
    println!("cargo:rerun-if-changed=migrations");
    // The sol! bindings read the committed artifacts.
    println!("cargo:rerun-if-changed=../contracts/out");
}
