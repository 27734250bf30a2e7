//! A component of another world than `agentbox:plugin`: the host must refuse
//! it at load, naming the export it lacks.

wit_bindgen::generate!({ path: "wit", world: "greeter" });

struct Greeter;

impl Guest for Greeter {
    fn greet(name: String) -> String {
        format!("hello, {name}")
    }
}

export!(Greeter);
